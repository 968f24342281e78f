import keras
import numpy as np
import pytest

from keras_ssl.layers import RandomSolarize
from keras_ssl.layers.random_solarize import solarize
from keras_ssl.testing import TestCase

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data / tf.function need the TensorFlow backend",
)


def images(batch, size=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, size, size, 3)).astype("float32")


class TestRandomSolarize(TestCase):
    def test_contract(self):
        x = np.random.randint(0, 256, (2, 6, 6, 3), dtype="uint8")
        out = self.run_layer_contract(
            RandomSolarize,
            {"p": 0.5, "seed": 1},
            x,
            expected_output_shape=(2, 6, 6, 3),
            # Augmentation computes and returns float32 under any policy.
            expected_mixed_output_dtype="float32",
        )
        self.assertAllClose(out, x / 255.0)  # training=False

    @pytest.mark.parametrize("threshold", [0.5, 0.2])
    def test_solarize_matches_numpy(self, threshold):
        x = np.array([0.0, 0.1, 0.2, 0.49, 0.5, 0.7, 1.0], "float32")
        expected = np.where(x >= threshold, 1.0 - x, x)
        self.assertAllClose(solarize(x, threshold), expected)

    def test_always_solarize_uint8(self):
        x = np.random.randint(0, 256, (3, 6, 6, 3), dtype="uint8")
        out = RandomSolarize(p=1.0, seed=0)(x, training=True)
        f = x / 255.0
        self.assertAllClose(out, np.where(f >= 0.5, 1.0 - f, f), atol=1e-6)

    def test_rate(self):
        x = images(2000, size=3)
        out = RandomSolarize(p=0.2, seed=3)(x, training=True)
        changed = np.any(keras.ops.convert_to_numpy(out) != x, axis=(1, 2, 3))
        assert abs(changed.mean() - 0.2) < 5 * np.sqrt(0.16 / 2000)
        # Each image is either untouched or fully solarized.
        out = keras.ops.convert_to_numpy(out)
        self.assertAllClose(out[~changed], x[~changed], atol=0)
        full = np.where(x >= 0.5, 1.0 - x, x)
        self.assertAllClose(out[changed], full[changed], atol=1e-7)

    def test_same_seed_same_output(self):
        x = images(16)
        a = RandomSolarize(p=0.5, seed=7)(x, training=True)
        b = RandomSolarize(p=0.5, seed=7)(x, training=True)
        self.assertAllClose(a, b, atol=0)

    def test_unbatched(self):
        x = images(1)[0]
        out = RandomSolarize(p=1.0, seed=0)(x, training=True)
        self.assertAllClose(out, np.where(x >= 0.5, 1.0 - x, x), atol=1e-7)

    @pytest.mark.parametrize(
        "kwargs, name",
        [({"p": 2.0}, "p"), ({"threshold": 1.5}, "threshold")],
    )
    def test_validation(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            RandomSolarize(**kwargs)

    @TF_ONLY
    def test_in_tf_data_and_jit(self):
        import tensorflow as tf

        x = np.random.randint(0, 256, (8, 6, 6, 3), dtype="uint8")
        layer = RandomSolarize(p=0.5, seed=0)
        ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
        batches = list(ds.map(lambda x: layer(x, training=True)))
        assert [tuple(b.shape) for b in batches] == [(4, 6, 6, 3)] * 2
        ds = tf.data.Dataset.from_tensor_slices(x)
        single = next(iter(ds.map(lambda x: layer(x, training=True))))
        assert tuple(single.shape) == (6, 6, 3)
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        self.assertShape(fn(x), (8, 6, 6, 3))

    @pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
    def test_jax_jit(self):
        import jax

        layer = RandomSolarize(p=0.5, seed=0)
        state = [v.value for v in layer.non_trainable_variables]
        fn = jax.jit(
            lambda state, x: layer.stateless_call([], state, x, training=True)
        )
        out, _ = fn(state, images(8))
        self.assertShape(out, (8, 6, 6, 3))
