"""Every training step compiles with XLA on TensorFlow.

`TPUStrategy` compiles each replica's step with XLA, and no TPU is at hand
to test on; Keras's default (`jit_compile="auto"`) turns XLA off on a CPU,
so the other TensorFlow tests never compile the steps this way. A step
that uses an op without an XLA kernel, or a shape XLA cannot make static,
fails here.
"""

import keras
import numpy as np
import pytest

from keras_ssl.optimizers import LARS
from keras_ssl.testing import TestCase
from tests.models.model_cases import MODELS
from tests.models.model_cases import make_model
from tests.models.model_cases import make_stream

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's XLA compilation of the training step",
)


class TestXLA(TestCase):
    # XLA compiles each whole training step: half a minute to minutes.
    @pytest.mark.slow
    @pytest.mark.parametrize("name", MODELS)
    def test_training_step_compiles_with_xla(self, name):
        keras.utils.set_random_seed(0)
        model = make_model(name)
        model.compile(optimizer=LARS(0.5), jit_compile=True)
        before = [keras.ops.convert_to_numpy(v) for v in model.weights]
        # `to_tf_dataset()`: static batch sizes, which SemPPL requires.
        stream = make_stream(name).to_tf_dataset()
        history = model.fit(stream, epochs=1, verbose=0, shuffle=False)
        history = history.history
        assert model.jit_compile
        assert np.all(np.isfinite(history["loss"]))
        after = [keras.ops.convert_to_numpy(v) for v in model.weights]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))
