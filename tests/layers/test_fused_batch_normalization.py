import keras
import numpy as np
import pytest

from keras_ssl.layers import FusedBatchNormalization
from keras_ssl.layers.fused_batch_normalization import batch_normalization
from keras_ssl.testing import TestCase

SHAPES = [(4, 5, 6, 3), (8, 7), (3, 4, 5)]


def pair(shape, dtype="float32", **kwargs):
    """Keras's layer and ours, built with the same weights."""
    rng = np.random.default_rng(len(shape))
    layers = [
        keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, **kwargs),
        FusedBatchNormalization(momentum=0.9, dtype=dtype, **kwargs),
    ]
    channels = shape[-1]
    values = [rng.normal(size=(channels,)).astype("float32") for _ in range(4)]
    values[3] = np.abs(values[3]) + 0.5  # a moving variance
    for layer in layers:
        layer.build(shape)
        for variable, value in zip(
            layer.weights, values[-len(layer.weights) :]
        ):
            variable.assign(value)
    return layers


def run(layer, x, upstream):
    """Outputs, gradients of (x, trainable weights), moving statistics."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [y] + grads + [layer.moving_mean, layer.moving_variance]


class TestFusedBatchNormalization(TestCase):
    def test_contract(self):
        x = np.random.default_rng(0).normal(size=(4, 3, 3, 2))
        self.run_layer_contract(
            FusedBatchNormalization,
            {"momentum": 0.9},
            x.astype("float32"),
            expected_output_shape=(4, 3, 3, 2),
            call_kwargs={"training": True},
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
        )

    @pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="the fused kernel is TensorFlow's; elsewhere it is Keras's",
    )
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
    @pytest.mark.parametrize("affine", [True, False])
    def test_training_step_equals_keras(self, shape, dtype, affine):
        keras_bn, fused = pair(shape, dtype, center=affine, scale=affine)
        rng = np.random.default_rng(7)
        atol = 1e-5 if dtype == "float32" else 1e-2
        for step in range(2):  # moving statistics from the updated ones
            x = (3.0 * rng.normal(size=shape) + 1.0).astype("float32")
            upstream = rng.normal(size=shape).astype("float32")
            expected = run(keras_bn, x, upstream)
            got = run(fused, x, upstream)
            assert len(got) == len(expected) == (6 if affine else 4)
            for name, a, b in zip(
                ["outputs", "x grad", "weight grads", "", "mean", "var"],
                got,
                expected,
            ):
                a = keras.ops.convert_to_numpy(keras.ops.cast(a, "float32"))
                b = keras.ops.convert_to_numpy(keras.ops.cast(b, "float32"))
                self.assertAllClose(a, b, atol=atol, rtol=atol, msg=name)
        self.assertDType(fused.moving_variance, "float32")
        self.assertDType(got[0], keras_bn.compute_dtype)

    def test_moments_match_numpy(self):
        shape = (6, 2, 3, 4)
        _, fused = pair(shape)
        mean0 = keras.ops.convert_to_numpy(fused.moving_mean)
        var0 = keras.ops.convert_to_numpy(fused.moving_variance)
        gamma = keras.ops.convert_to_numpy(fused.gamma).astype("float64")
        beta = keras.ops.convert_to_numpy(fused.beta).astype("float64")
        x = np.random.default_rng(3).normal(size=shape).astype("float32")
        y = fused(x, training=True)
        x64 = x.astype("float64").reshape(-1, shape[-1])
        mean, var = x64.mean(0), x64.var(0)  # biased, as Keras
        expected = (x64 - mean) / np.sqrt(var + fused.epsilon) * gamma + beta
        self.assertAllClose(y, expected.reshape(shape), atol=1e-5)
        self.assertAllClose(
            fused.moving_mean, 0.9 * mean0 + 0.1 * mean, atol=1e-6
        )
        self.assertAllClose(
            fused.moving_variance, 0.9 * var0 + 0.1 * var, atol=1e-6
        )

    @pytest.mark.skipif(
        keras.backend.backend() == "jax",
        reason="JAX computes in float64 only with jax_enable_x64",
    )
    def test_float64_is_normalised_in_float64(self):
        # The fused kernel has no float64; such a layer used to run it in
        # float32 and then fail to add the float32 moments to its float64
        # moving statistics.
        shape = (5, 2, 3, 4)
        _, fused = pair(shape, dtype="float64")
        x = np.random.default_rng(4).normal(size=shape)
        gamma = keras.ops.convert_to_numpy(fused.gamma)
        beta = keras.ops.convert_to_numpy(fused.beta)
        mean0 = keras.ops.convert_to_numpy(fused.moving_mean)
        y = keras.ops.convert_to_numpy(fused(x, training=True))
        rows = x.reshape(-1, shape[-1])
        mean, var = rows.mean(0), rows.var(0)
        expected = (x - mean) / np.sqrt(var + fused.epsilon) * gamma + beta
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fused.moving_mean),
            0.9 * mean0 + 0.1 * mean,
            rtol=1e-12,
            atol=1e-12,
        )

    def test_inference_and_frozen_use_moving_statistics(self):
        shape = (4, 3, 3, 2)
        keras_bn, fused = pair(shape)
        x = np.random.default_rng(5).normal(size=shape).astype("float32")
        self.assertAllClose(
            fused(x, training=False), keras_bn(x, training=False), atol=1e-6
        )
        fused.trainable = False
        keras_bn.trainable = False
        self.assertAllClose(
            fused(x, training=True), keras_bn(x, training=True), atol=1e-6
        )


@pytest.mark.parametrize("synchronized", [False, True])
def test_batch_normalization_synchronizes_on_tensorflow_only(synchronized):
    layer = batch_normalization(
        synchronized, momentum=0.9, epsilon=1e-5, name="bn"
    )
    on_tensorflow = keras.backend.backend() == "tensorflow"
    assert isinstance(layer, FusedBatchNormalization)
    assert layer.synchronized == (synchronized and on_tensorflow)
    assert (layer.momentum, layer.epsilon, layer.name) == (0.9, 1e-5, "bn")
