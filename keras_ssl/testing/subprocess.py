"""Runs a snippet in a fresh Python process with several logical devices.

Two `MirroredStrategy` runs in one process can collide in their collective
ops, and the number of logical devices is fixed once TensorFlow (or JAX)
starts, so every distributed test runs its own process.
"""

import json
import os
import subprocess
import sys
import textwrap

_SETUP = {
    "tensorflow": """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * {num_devices}
)
""",
    # JAX reads the host device count from XLA_FLAGS when it starts.
    "jax": """
import os
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count={num_devices}"
)
import jax
""",
}

_PRELUDE = """
import json
import numpy as np
import keras


def emit(**values):
    def _plain(v):
        if hasattr(v, "numpy"):
            v = v.numpy()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, (list, tuple)):
            return [_plain(x) for x in v]
        if isinstance(v, dict):
            return {{k: _plain(x) for k, x in v.items()}}
        return v

    print("@@RESULT@@" + json.dumps(_plain(values)))
"""


def run_in_subprocess(
    code: str,
    num_devices: int = 2,
    timeout: float = 600,
    env=None,
    backend: str = "tensorflow",
) -> dict:
    """Runs `code` in a new interpreter and returns what it `emit()`-ted.

    The snippet sees `np`, `keras` and `emit(**values)`, and `tf` (with
    `num_devices` logical CPU devices configured before TensorFlow starts)
    or `jax` (with `num_devices` host devices), as `backend` says.

    Args:
        code: str. Python source; it calls `emit(name=value, ...)` once.
        num_devices: int. Logical CPU devices to create. Defaults to `2`.
        timeout: float. Seconds before the process is killed.
        env: optional dict of extra environment variables.
        backend: `"tensorflow"` (default) or `"jax"`: the Keras backend
            of the process.

    Returns:
        The dict passed to `emit`, with arrays as nested lists.
    """
    if backend not in _SETUP:
        raise ValueError(
            f"`backend` must be one of {sorted(_SETUP)}. "
            f"Received: backend={backend!r}"
        )
    setup = _SETUP[backend].format(num_devices=num_devices)
    source = setup + _PRELUDE.format() + textwrap.dedent(code)
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    for line in result.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    raise RuntimeError(
        f"Subprocess failed (exit {result.returncode}).\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    )
