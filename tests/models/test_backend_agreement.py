"""The JAX and TensorFlow training steps compute the same step.

Both steps wrap the same `compute_ssl_loss`; this checks that the two
differentiations around it agree: the same model with the same weights on
the same batch gives the same loss and the same updated weights and state
on both backends. Only methods whose step draws no random numbers (their
views are plain resizes here) are compared: the backends' random number
generators differ.
"""

import importlib.util

import numpy as np
import pytest

from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess

# SimCLRv2 holds every kind of state a step updates (BN statistics, a
# momentum network, a queue); PAWS and SemPPL run the same step code.
_NAMES = ["simclrv2"]

_ONE_STEP = """
from keras_ssl.optimizers import LARS
from tests.models.model_cases import make_model, make_stream, state_variables

numpy = keras.ops.convert_to_numpy
results = {{}}
for name in {names}:
    model = make_model(name, fixed=True)
    # The same weights on both backends, whatever their initialisers draw.
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue
        values = rng.normal(0, 0.3, variable.shape)
        if "variance" in variable.path:
            values = np.abs(values) + 0.5
        variable.assign(values.astype("float32"))
    model.compile(optimizer=LARS(0.5, weight_decay=1e-4))
    history = model.fit(make_stream(name, num_batches=1), verbose=0).history
    results[name] = dict(
        history={{k: v[0] for k, v in history.items()}},
        weights=[numpy(w) for w in model.trainable_weights],
        state={{
            k: [numpy(v) for v in vs]
            for k, vs in state_variables(model, name).items()
        }},
    )
emit(**results)
"""


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="needs both JAX and TensorFlow",
)
class TestBackendAgreement(TestCase):
    def test_jax_step_equals_tensorflow_step(self):
        code = _ONE_STEP.format(names=_NAMES)
        runs = {
            backend: run_in_subprocess(
                code, num_devices=1, backend=backend, env={"PYTHONPATH": "."}
            )
            for backend in ("tensorflow", "jax")
        }
        for name in _NAMES:
            tf_run, jax_run = runs["tensorflow"][name], runs["jax"][name]
            assert set(tf_run["history"]) == set(jax_run["history"])
            for metric, value in tf_run["history"].items():
                self.assertAllClose(
                    jax_run["history"][metric], value, atol=1e-4, msg=metric
                )
            for a, b in zip(jax_run["weights"], tf_run["weights"]):
                self.assertAllClose(a, b, atol=2e-4, rtol=1e-3)
            for key in tf_run["state"]:
                for a, b in zip(jax_run["state"][key], tf_run["state"][key]):
                    self.assertAllClose(a, b, atol=2e-4, rtol=1e-3)
            # The step moved the weights: the comparison is not vacuous.
            moved = max(np.abs(np.asarray(a)).max() for a in jax_run["weights"])
            assert moved > 0
