import colorsys
import itertools

import keras
import numpy as np
import pytest

from keras_ssl.layers import ColorDistortion
from keras_ssl.testing import TestCase

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data / tf.function need the TensorFlow backend",
)

# NumPy reference, written from the op definitions (float64).
LUMA = np.array([0.2989, 0.5870, 0.1140])
RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
)


def np_brightness(x, f):
    return x * f


def np_contrast(x, f):
    mean = (x @ LUMA).mean()
    return mean + f * (x - mean)


def np_saturation(x, f):
    gray = (x @ LUMA)[..., None]
    return gray + f * (x - gray)


def np_hue(x, delta):
    yiq = x @ RGB_TO_YIQ.T
    # Positive delta turns red towards yellow: clockwise in (I, Q).
    angle = -2 * np.pi * delta
    i, q = yiq[..., 1], yiq[..., 2]
    yiq = np.stack(
        [
            yiq[..., 0],
            np.cos(angle) * i - np.sin(angle) * q,
            np.sin(angle) * i + np.cos(angle) * q,
        ],
        axis=-1,
    )
    return yiq @ np.linalg.inv(RGB_TO_YIQ).T


def np_distort(image, order, factors, jitter, grayscale):
    x = image.astype(np.float64)
    ops = [np_brightness, np_contrast, np_saturation, np_hue]
    if jitter:
        for op in order:
            x = np.clip(ops[op](x, factors[op]), 0.0, 1.0)
    if grayscale:
        x = np.repeat((x @ LUMA)[..., None], 3, axis=-1)
    return x


def params(order, factors, jitter=True, grayscale=False):
    batch = len(order)
    return {
        "order": np.asarray(order, dtype="int32"),
        "factors": np.asarray(factors, dtype="float32"),
        "jitter": np.full((batch,), jitter),
        "grayscale": np.full((batch,), grayscale),
    }


def colourful(batch, size=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, (batch, size, size, 3)).astype("float32")


class TestColorDistortion(TestCase):
    def test_contract(self):
        images = np.random.randint(0, 256, (2, 8, 8, 3), dtype="uint8")
        out = self.run_layer_contract(
            ColorDistortion,
            {"strength": 0.5, "seed": 1},
            images,
            expected_output_shape=(2, 8, 8, 3),
            # Augmentation computes and returns float32 under any policy.
            expected_mixed_output_dtype="float32",
        )
        self.assertAllClose(out, images / 255.0)  # training=False

    def test_training_shapes_dtype_range(self):
        images = np.random.randint(0, 256, (4, 8, 8, 3), dtype="uint8")
        layer = ColorDistortion(seed=0)
        out = keras.ops.convert_to_numpy(layer(images, training=True))
        self.assertShape(out, (4, 8, 8, 3))
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        self.assertShape(layer(images[0], training=True), (8, 8, 3))

    @pytest.mark.parametrize(
        "order, jitter, grayscale",
        [
            ((0, 1, 2, 3), True, False),
            ((3, 2, 1, 0), True, False),
            ((1, 3, 0, 2), True, True),
            ((2, 0, 3, 1), False, True),
            ((2, 0, 3, 1), False, False),
        ],
    )
    def test_matches_numpy_reference(self, order, jitter, grayscale):
        images = colourful(3)
        factors = [
            [1.5, 0.6, 1.4, 0.08],
            [0.4, 1.7, 0.2, -0.15],
            [1.1, 1.0, 1.8, 0.2],
        ]
        layer = ColorDistortion(seed=0)
        out = layer.distort(
            images, params([order] * 3, factors, jitter, grayscale)
        )
        for i in range(3):
            expected = np_distort(
                images[i], order, factors[i], jitter, grayscale
            )
            self.assertAllClose(out[i], expected, atol=2e-5)

    def test_mixed_orders_in_one_batch_match_numpy(self):
        # Every order once, each image with its own factors, jitter and
        # grayscale: contrast sits in a different slot from image to image.
        orders = list(itertools.permutations(range(4)))
        rng = np.random.default_rng(5)
        factors = np.stack(
            [
                rng.uniform(0.2, 1.8, 24),
                rng.uniform(0.2, 1.8, 24),
                rng.uniform(0.2, 1.8, 24),
                rng.uniform(-0.2, 0.2, 24),
            ],
            axis=1,
        ).astype("float32")
        jitter = rng.uniform(size=24) < 0.8
        grayscale = rng.uniform(size=24) < 0.3
        images = colourful(24, size=4, seed=2)
        out = ColorDistortion(seed=0).distort(
            images,
            {
                "order": np.asarray(orders, "int32"),
                "factors": factors,
                "jitter": jitter,
                "grayscale": grayscale,
            },
        )
        out = keras.ops.convert_to_numpy(out)
        for i in range(24):
            expected = np_distort(
                images[i], orders[i], factors[i], jitter[i], grayscale[i]
            )
            self.assertAllClose(out[i], expected, atol=2e-5)

    def test_single_ops_match_numpy(self):
        # Each op alone (the others set to the identity), fixed parameters.
        image = colourful(1)[0].astype(np.float64)
        identity = [1.0, 1.0, 1.0, 0.0]
        layer = ColorDistortion(seed=0)
        cases = [
            (0, 1.6, np_brightness),
            (1, 0.3, np_contrast),
            (1, 1.8, np_contrast),
            (2, 0.0, np_saturation),
            (2, 1.7, np_saturation),
            (3, 0.25, np_hue),
        ]
        for op, value, fn in cases:
            factors = list(identity)
            factors[op] = value
            out = layer.distort(
                image[None].astype("float32"),
                params([(0, 1, 2, 3)], [factors]),
            )
            expected = np.clip(fn(image, value), 0, 1)
            self.assertAllClose(out[0], expected, atol=2e-5, msg=fn.__name__)

    def test_hue_turns_red_towards_yellow(self):
        red = np.zeros((1, 1, 1, 3), "float32")
        red[..., 0] = 0.8
        red[..., 1] = 0.2
        red[..., 2] = 0.2
        out = ColorDistortion(seed=0).distort(
            red, params([(3, 0, 1, 2)], [[1.0, 1.0, 1.0, 0.05]])
        )
        hue, _, _ = colorsys.rgb_to_hsv(
            *keras.ops.convert_to_numpy(out)[0, 0, 0]
        )
        assert 0.0 < hue < 0.12  # red is hue 0, yellow 1/6

    def test_orders_give_different_outputs(self):
        images = colourful(1)
        factors = [[1.6, 0.4, 1.7, 0.15]]
        layer = ColorDistortion(seed=0)
        a = layer.distort(images, params([(0, 1, 2, 3)], factors))
        b = layer.distort(images, params([(3, 2, 1, 0)], factors))
        assert np.abs(keras.ops.convert_to_numpy(a - b)).max() > 0.05

    def test_all_24_orders_equally_likely(self):
        order = ColorDistortion(seed=3).sample_params(4800)["order"]
        order = keras.ops.convert_to_numpy(order)
        assert (np.sort(order, axis=1) == np.arange(4)).all()
        index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
        counts = np.bincount([index[tuple(o)] for o in order], minlength=24)
        chi2 = ((counts - 200.0) ** 2 / 200.0).sum()
        assert chi2 < 56.0, counts  # chi-square, 23 dof, p ~ 1e-4

    def test_factor_ranges(self):
        layer = ColorDistortion(strength=0.5, seed=0)
        factors = keras.ops.convert_to_numpy(
            layer.sample_params(2000)["factors"]
        )
        for i, amount in enumerate([0.4, 0.4, 0.4]):
            assert factors[:, i].min() >= 1 - amount - 1e-6
            assert factors[:, i].max() <= 1 + amount + 1e-6
            assert factors[:, i].min() < 1 - 0.9 * amount
            assert factors[:, i].max() > 1 + 0.9 * amount
        assert np.abs(factors[:, 3]).max() <= 0.1 + 1e-6
        assert np.abs(factors[:, 3]).max() > 0.09
        # Strength 1.0: brightness in [max(0, 0.2), 1.8].
        overrides = ColorDistortion(brightness=1.5, hue=0.5, seed=0)
        factors = overrides.sample_params(2000)["factors"]
        factors = keras.ops.convert_to_numpy(factors)
        assert factors[:, 0].min() >= 0.0 and factors[:, 0].max() <= 2.5
        assert factors[:, 1].min() >= 0.2 - 1e-6
        assert overrides.amounts == (1.5, 0.8, 0.8, 0.5)

    def test_grayscale_rate(self):
        images = colourful(2000, size=4)
        out = ColorDistortion(p_jitter=0.0, p_grayscale=0.2, seed=1)(
            images, training=True
        )
        out = keras.ops.convert_to_numpy(out)
        gray = np.all(np.ptp(out, axis=-1) < 1e-6, axis=(1, 2))
        assert abs(gray.mean() - 0.2) < 5 * np.sqrt(0.16 / 2000)
        # Gray images carry the luma of the input.
        expected = images[gray] @ LUMA
        self.assertAllClose(out[gray][..., 0], expected, atol=1e-5)
        # The others are untouched.
        self.assertAllClose(out[~gray], images[~gray], atol=1e-6)

    def test_jitter_rate(self):
        images = colourful(2000, size=4)
        out = ColorDistortion(p_jitter=0.8, p_grayscale=0.0, seed=2)(
            images, training=True
        )
        unchanged = np.all(
            np.abs(keras.ops.convert_to_numpy(out) - images) < 1e-6,
            axis=(1, 2, 3),
        )
        assert abs(unchanged.mean() - 0.2) < 5 * np.sqrt(0.16 / 2000)

    def test_zero_strength_is_identity(self):
        images = colourful(4)
        layer = ColorDistortion(strength=0.0, p_grayscale=0.0, seed=0)
        self.assertAllClose(layer(images, training=True), images, atol=1e-5)

    def test_same_seed_same_output(self):
        images = colourful(4)
        a = ColorDistortion(seed=7)(images, training=True)
        b = ColorDistortion(seed=7)(images, training=True)
        c = ColorDistortion(seed=8)(images, training=True)
        self.assertAllClose(a, b, atol=0)
        assert np.abs(keras.ops.convert_to_numpy(a - c)).max() > 0.01

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"strength": -0.1}, "strength"),
            ({"strength": 3.0}, "strength"),
            ({"p_jitter": 1.5}, "p_jitter"),
            ({"p_grayscale": -0.1}, "p_grayscale"),
            ({"brightness": -1.0}, "brightness"),
            ({"contrast": -1.0}, "contrast"),
            ({"saturation": -1.0}, "saturation"),
            ({"hue": 0.6}, "hue"),
        ],
    )
    def test_validation(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            ColorDistortion(**kwargs)

    def test_large_strength_with_hue_override(self):
        layer = ColorDistortion(strength=3.0, hue=0.1)
        np.testing.assert_allclose(layer.amounts, (2.4, 2.4, 2.4, 0.1))

    @TF_ONLY
    def test_in_tf_data(self):
        import tensorflow as tf

        images = np.random.randint(0, 256, (8, 8, 8, 3), dtype="uint8")
        layer = ColorDistortion(seed=0)
        ds = tf.data.Dataset.from_tensor_slices(images).batch(4)
        batches = list(ds.map(lambda x: layer(x, training=True)))
        assert [tuple(b.shape) for b in batches] == [(4, 8, 8, 3)] * 2
        assert batches[0].dtype == tf.float32
        ds = tf.data.Dataset.from_tensor_slices(images)
        ds = ds.map(lambda x: layer(x, training=True))
        assert tuple(next(iter(ds)).shape) == (8, 8, 3)

    @TF_ONLY
    def test_jit_compiled(self):
        import tensorflow as tf

        images = colourful(4)
        layer = ColorDistortion(seed=0)
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        a, b = fn(images), fn(images)
        self.assertShape(a, (4, 6, 6, 3))
        assert np.abs(a.numpy() - b.numpy()).max() > 0

    @pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
    def test_jax_jit(self):
        import jax

        layer = ColorDistortion(seed=0)
        state = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def fn(state, x):
            return layer.stateless_call([], state, x, training=True)

        a, state = fn(state, colourful(4))
        b, _ = fn(state, colourful(4))
        self.assertShape(a, (4, 6, 6, 3))
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0
