"""Every training model under Keras's mixed-precision policies.

Convolutions and matmuls run in the low precision; the variables, the
BatchNorm statistics, the losses, the optimizer's arithmetic, queues and
momentum copies stay float32. A model built under `mixed_bfloat16` (or
`mixed_float16`, with Keras's loss scaling) from the weights of a float32
model tracks the float32 model's losses for a few steps.
"""

import keras
import numpy as np
import pytest

from keras_ssl.models.momentum import all_layers
from keras_ssl.optimizers import LARS
from keras_ssl.testing import TestCase
from tests.models.model_cases import MODELS
from tests.models.model_cases import make_model
from tests.models.model_cases import make_stream

# Distance from the float32 losses allowed over 3 steps, relative and
# absolute (PAWS's loss, with ME-MAX, is near 0): bfloat16 keeps 8 bits of
# mantissa (a relative rounding of 2^-9 per op), float16 11.
TOLERANCE = {"mixed_bfloat16": 0.03, "mixed_float16": 0.015}
STEPS = 3


def build(name, policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        return make_model(name, fixed=True)
    finally:
        keras.config.set_dtype_policy(previous)


def batches(name):
    stream = make_stream(name, num_batches=STEPS)
    return [stream[i] for i in range(STEPS)]


def losses(model, data, policy="float32"):
    optimizer = LARS(0.02, weight_decay=1e-4)
    if policy == "mixed_float16":
        # Keras's default first scale (2^15) overflows the first gradients
        # and skips those steps, which float32 does not; a scale that fits
        # keeps the two runs on the same path.
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=2.0**8
        )
    model.compile(optimizer=optimizer)
    return [
        float(model.train_on_batch(batch, return_dict=True)["loss"])
        for batch in data
    ]


def low_precision_layers(model):
    return [
        layer
        for layer in all_layers(model)[1:]
        if layer.compute_dtype in ("bfloat16", "float16")
    ]


class TestMixedPrecision(TestCase):
    @pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
    @pytest.mark.parametrize("name", MODELS)
    def test_tracks_the_float32_losses(self, name, policy):
        reference = build(name, "float32")
        model = build(name, policy)
        model.set_weights(reference.get_weights())
        assert low_precision_layers(model)
        data = batches(name)
        expected = losses(reference, data)
        got = losses(model, data, policy)
        assert np.all(np.isfinite(got))
        tolerance = TOLERANCE[policy]
        self.assertAllClose(got, expected, atol=tolerance, rtol=tolerance)
        # Every variable stays float32 (random states are integers).
        for variable in model.variables:
            if "seed_generator" not in variable.path:
                assert variable.dtype in ("float32", "int32", "int64"), (
                    variable.path,
                    variable.dtype,
                )

    def test_model_dtype_reaches_the_layers_it_makes(self):
        from keras_ssl.models import SimCLRv2Pretrainer
        from tests.models.conftest import tiny_encoder

        model = SimCLRv2Pretrainer(
            tiny_encoder(), memory_size=4, dtype="mixed_bfloat16"
        )
        assert model.head.dtype_policy.name == "mixed_bfloat16"
        assert model.views.dtype_policy.name == "mixed_bfloat16"
