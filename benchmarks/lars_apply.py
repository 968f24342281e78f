"""Time `LARS.apply` against `SGD(momentum=0.9)` on ResNet-50's variables.

Both optimizers update the trainable variables of a ResNet-50 (built, never
run) with the same random gradients. On TensorFlow the step runs inside
`tf.function` with XLA off and on; on JAX it runs under `jax.jit` (XLA,
`stateless_apply` with donated buffers, as Keras's JAX trainer does). Calls
of the two optimizers are interleaved so that a noisy, shared machine slows
both alike; the script prints the median time per `apply` and the ratio
LARS / SGD (target: <= 1.5).

Usage:

```
KERAS_BACKEND=tensorflow python benchmarks/lars_apply.py --repeats 30
KERAS_BACKEND=jax python benchmarks/lars_apply.py --repeats 30
```
"""

import argparse
import os
import platform
import statistics
import sys
import time

# Run from a checkout without installing the package; an installed
# keras_ssl, or one on PYTHONPATH, comes first.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ssl.optimizers import LARS  # noqa: E402


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _accelerators():
    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def _resnet50_variables(source):
    """ResNet-50 trainable variables, from keras_ssl if it has one."""
    if source in ("auto", "keras_ssl"):
        try:
            from keras_ssl.backbones import ResNet

            model = ResNet(depth=50, input_shape=(224, 224, 3))
            return model.trainable_variables, "keras_ssl ResNet(depth=50)"
        except Exception:  # noqa: BLE001 - "auto" falls back to Keras.
            if source == "keras_ssl":
                raise
    model = keras.applications.ResNet50(weights=None)
    return model.trainable_variables, "keras.applications.ResNet50"


def _tf_step(optimizer, grads, variables, jit_compile):
    import tensorflow as tf

    grads = [tf.constant(g) for g in grads]
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def step():
        optimizer.apply(grads, variables)
        return optimizer.iterations

    # Reading the counter back waits for the step to finish.
    return lambda: step().numpy()


def _jax_step(optimizer, grads, variables, jit_compile):
    import jax

    grads = [jax.numpy.asarray(g) for g in grads]
    optimizer.build(variables)
    # Copies: the buffers are donated, and each optimizer gets its own.
    state = {
        "trainable": [jax.numpy.array(v.value) for v in variables],
        "optimizer": [jax.numpy.array(v.value) for v in optimizer.variables],
    }

    def step(trainable, optimizer_variables, grads):
        return optimizer.stateless_apply(optimizer_variables, grads, trainable)

    step = jax.jit(step, donate_argnums=(0, 1))

    def run():
        trainable, optimizer_variables = step(
            state["trainable"], state["optimizer"], grads
        )
        state["trainable"] = trainable
        state["optimizer"] = optimizer_variables
        jax.block_until_ready(trainable)

    return run


def _bench(variables, grads, jit_compile, warmup, repeats):
    make_step = _jax_step if keras.backend.backend() == "jax" else _tf_step
    optimizers = {
        "LARS": LARS(learning_rate=1e-3, weight_decay=1e-6),
        "SGD": keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9),
    }
    steps = {
        name: make_step(opt, grads, variables, jit_compile)
        for name, opt in optimizers.items()
    }
    times = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--jit",
        choices=["off", "on", "both"],
        default="both",
        help="TensorFlow only; JAX always compiles with XLA.",
    )
    parser.add_argument(
        "--model", choices=["auto", "keras_ssl", "keras"], default="auto"
    )
    args = parser.parse_args()

    print("command:", "KERAS_BACKEND=" + keras.backend.backend(), *sys.argv)
    print(
        f"machine: nproc={os.cpu_count()}, cpu={_cpu_model()}, "
        f"accelerators={_accelerators()}, keras={keras.__version__}"
    )
    variables, source = _resnet50_variables(args.model)
    sizes = sum(int(np.prod(v.shape)) for v in variables)
    print(f"variables: {source}: {len(variables)} tensors, {sizes:,} values")
    rng = np.random.default_rng(0)
    grads = [
        rng.normal(size=v.shape).astype("float32") * 1e-3 for v in variables
    ]

    if keras.backend.backend() == "jax":
        modes = [True]
    else:
        modes = {"off": [False], "on": [True], "both": [False, True]}
        modes = modes[args.jit]
    for jit_compile in modes:
        try:
            median = _bench(
                variables, grads, jit_compile, args.warmup, args.repeats
            )
        except Exception as error:  # noqa: BLE001 - report and go on.
            print(f"jit_compile={jit_compile}: failed: {error!r}"[:300])
            continue
        print(
            f"jit_compile={jit_compile}: "
            f"LARS {median['LARS'] * 1e3:.2f} ms, "
            f"SGD {median['SGD'] * 1e3:.2f} ms, "
            f"ratio LARS/SGD {median['LARS'] / median['SGD']:.2f} "
            f"(median of {args.repeats} after {args.warmup} warm-up)"
        )


if __name__ == "__main__":
    main()
