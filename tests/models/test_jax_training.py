"""Every training model trains with `fit()` on the JAX backend.

These tests run only under `KERAS_BACKEND=jax` and import no TensorFlow:
CI runs them in an environment where TensorFlow is not installed. The
JAX step and the TensorFlow step share `compute_ssl_loss`.
"""

import keras
import numpy as np
import pytest

from keras_ssl.optimizers import LARS
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess
from tests.models.model_cases import MODELS
from tests.models.model_cases import make_model
from tests.models.model_cases import make_stream
from tests.models.model_cases import state_variables

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="tests the JAX training step"
)

_METRICS = {
    "simclrv2": {"loss", "contrastive_accuracy", "probe_accuracy"},
    "paws": {"loss", "me_max", "target_confidence", "support_accuracy"},
    "semppl": {"loss", "semantic_positive_coverage"},
    "distiller": {"loss", "distill_loss"},
}


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


class TestJAXTraining(TestCase):
    @pytest.mark.parametrize("name", MODELS)
    def test_fit_updates_weights_and_state(self, name):
        keras.utils.set_random_seed(0)
        model = make_model(name)
        model.compile(optimizer=LARS(0.5, weight_decay=1e-4))
        trainable = _values(model.trainable_variables)
        state = {k: _values(v) for k, v in state_variables(model, name).items()}
        history = model.fit(make_stream(name), epochs=2, verbose=0).history
        assert _METRICS[name] <= set(history)
        assert all(np.isfinite(history["loss"]))
        # Every kernel moves (a bias just before a BatchNormalization has
        # no gradient, so only kernels are checked).
        changed = [
            not np.allclose(a, b)
            for a, b in zip(trainable, _values(model.trainable_variables))
            if a.ndim >= 2
        ]
        assert changed and all(changed)
        for key, variables in state_variables(model, name).items():
            after = _values(variables)
            assert any(
                not np.array_equal(a, b) for a, b in zip(state[key], after)
            ), key

    def test_evaluate_runs_the_stateless_test_step(self):
        model = make_model("simclrv2")
        model.compile(optimizer=LARS(0.1))
        queue = _values([model.queue.queue])[0]
        stream = make_stream("simclrv2")
        logs = model.evaluate(stream, verbose=0, return_dict=True)
        assert np.isfinite(logs["loss"])
        # Evaluation must not enqueue.
        self.assertAllClose(_values([model.queue.queue])[0], queue)

    def test_recipes_say_they_need_tensorflow(self):
        from keras_ssl.recipes import simclrv2

        with pytest.raises(RuntimeError, match="backend=jax"):
            simclrv2.fit(simclrv2.SimCLRv2Config.digits(verbose=0))

    def test_same_seed_gives_same_training(self):
        losses = []
        for _ in range(2):
            keras.utils.set_random_seed(0)
            model = make_model("paws")
            model.compile(optimizer=LARS(0.5))
            history = model.fit(make_stream("paws"), epochs=1, verbose=0)
            losses.append(history.history["loss"][0])
        self.assertAllClose(losses[0], losses[1])


_DATA_PARALLEL_STEP = """
import keras_ssl
from keras_ssl.optimizers import LARS
from tests.models.model_cases import make_model, make_stream, state_variables

numpy = keras.ops.convert_to_numpy

if {num_devices} > 1:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
results = {{}}
for name in {names}:
    keras.utils.set_random_seed(0)
    model = make_model(name, fixed=True)
    model.compile(optimizer=LARS(0.5, weight_decay=1e-4))
    history = model.fit(make_stream(name), epochs=1, verbose=0).history
    results[name] = dict(
        loss=history["loss"][0],
        weights=[numpy(w) for w in model.trainable_weights],
        state={{
            k: [numpy(v) for v in vs]
            for k, vs in state_variables(model, name).items()
        }},
    )
emit(devices=len(jax.devices()), **results)
"""


def _data_parallel(num_devices, names):
    return run_in_subprocess(
        _DATA_PARALLEL_STEP.format(num_devices=num_devices, names=names),
        num_devices=num_devices,
        backend="jax",
        env={"PYTHONPATH": "."},
    )


@pytest.mark.distributed
@pytest.mark.slow
class TestJAXDataParallel(TestCase):
    def test_two_devices_match_one(self):
        # The three pretrainers hold every kind of state (queues, momentum
        # and target networks, BN statistics, a support batch).
        names = ["simclrv2", "paws", "semppl"]
        single = _data_parallel(1, names)
        double = _data_parallel(2, names)
        assert (single["devices"], double["devices"]) == (1, 2)
        for name in names:
            one, two = single[name], double[name]
            self.assertAllClose(two["loss"], one["loss"], atol=1e-5)
            # LARS scales each update by |w| / |g|, so the relative
            # round-off of a gradient becomes the error of the update; in
            # PAWS that round-off is amplified by 1 / tau = 10 and the
            # sharpening power 4 and reaches ~1e-4. A device that saw only
            # its half of the batch or support is off by ~1e-1.
            tolerance = 2e-4 if name == "paws" else 2e-5
            for a, b in zip(two["weights"], one["weights"]):
                self.assertAllClose(a, b, atol=tolerance, rtol=1e-4)
            for key in one["state"]:
                for a, b in zip(two["state"][key], one["state"][key]):
                    self.assertAllClose(a, b, atol=2e-5, rtol=1e-4)
