import keras
import numpy as np
import pytest

from keras_ssl.layers import RandomGaussianBlur
from keras_ssl.layers.random_gaussian_blur import _reflect_index
from keras_ssl.layers.random_gaussian_blur import blur_selected
from keras_ssl.layers.random_gaussian_blur import gaussian_blur
from keras_ssl.layers.random_gaussian_blur import gaussian_kernel
from keras_ssl.layers.random_gaussian_blur import kernel_radius
from keras_ssl.testing import TestCase

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data / tf.function need the TensorFlow backend",
)


def np_kernel(sigma, radius):
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    return weights / weights.sum()


def np_blur(image, sigma, radius_h, radius_w=None):
    """Separable Gaussian blur of one (H, W, C) image, reflect padding."""
    radius_w = radius_h if radius_w is None else radius_w
    height, width = image.shape[:2]
    x = np.pad(
        image.astype(np.float64), [(radius_h,) * 2, (0, 0), (0, 0)], "reflect"
    )
    kernel = np_kernel(sigma, radius_h)
    x = sum(k * x[i : i + height] for i, k in enumerate(kernel))
    x = np.pad(x, [(0, 0), (radius_w,) * 2, (0, 0)], "reflect")
    kernel = np_kernel(sigma, radius_w)
    return sum(k * x[:, i : i + width] for i, k in enumerate(kernel))


def np_blur_2d(image, sigma, radius_h, radius_w):
    """Direct 2-D convolution of one (H, W, C) image with the outer product
    of the two 1-D kernels, reflect padding (not separable passes)."""
    height, width = image.shape[:2]
    kernel = np.outer(np_kernel(sigma, radius_h), np_kernel(sigma, radius_w))
    padded = np.pad(
        image.astype(np.float64),
        [(radius_h,) * 2, (radius_w,) * 2, (0, 0)],
        "reflect",
    )
    out = np.zeros(image.shape, np.float64)
    for i in range(2 * radius_h + 1):
        for j in range(2 * radius_w + 1):
            out += kernel[i, j] * padded[i : i + height, j : j + width]
    return out


def images(batch, height=12, width=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, height, width, 3)).astype("float32")


class TestRandomGaussianBlur(TestCase):
    def test_contract(self):
        x = np.random.randint(0, 256, (2, 10, 10, 3), dtype="uint8")
        out = self.run_layer_contract(
            RandomGaussianBlur,
            {"p": 0.5, "seed": 1},
            x,
            expected_output_shape=(2, 10, 10, 3),
            # Augmentation computes and returns float32 under any policy.
            expected_mixed_output_dtype="float32",
        )
        self.assertAllClose(out, x / 255.0)  # training=False

    def test_kernel_radius_follows_simclr(self):
        # SimCLR: kernel_size = side // 10, radius = kernel_size // 2.
        assert kernel_radius(224, 0.1) == 11  # 23 taps
        assert kernel_radius(96, 0.1) == 4
        assert kernel_radius(32, 0.1) == 1
        assert kernel_radius(18, 0.1) == 0
        assert kernel_radius(30, 0.1) == 1
        assert kernel_radius(20, 0.1) == 1

    def test_kernel_matches_numpy(self):
        sigma = np.array([0.1, 0.7, 2.0], "float32")
        kernel = keras.ops.convert_to_numpy(gaussian_kernel(sigma, 5))
        for i, s in enumerate(sigma):
            self.assertAllClose(kernel[i], np_kernel(s, 5), atol=1e-6)

    def test_blur_matches_numpy(self):
        x = images(3)
        sigma = np.array([0.3, 1.0, 2.0], "float32")
        out = gaussian_blur(x, sigma, kernel_fraction=0.5)
        for i in range(3):
            # Radius (12 * 0.5) // 2 = 3 rows, (10 * 0.5) // 2 = 2 columns.
            expected = np_blur(x[i], sigma[i], 3, 2)
            self.assertAllClose(out[i], expected, atol=1e-5)

    def test_blur_keeps_constant_images(self):
        x = np.full((2, 16, 16, 3), 0.3, "float32")
        out = gaussian_blur(x, np.array([0.5, 2.0], "float32"), 0.5)
        self.assertAllClose(out, x, atol=1e-6)

    @pytest.mark.parametrize("capacity", [None, 1, 3, 5, 8])
    def test_blur_selected_matches_masked_blur(self, capacity):
        x = images(8, 8, 8)
        sigma = np.linspace(0.5, 2.0, 8).astype("float32")
        apply = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
        out = blur_selected(x, sigma, apply, 0.5, capacity)
        expected = keras.ops.where(
            apply[:, None, None, None], gaussian_blur(x, sigma, 0.5), x
        )
        self.assertAllClose(out, expected, atol=1e-6)

    @pytest.mark.parametrize("length, radius", [(5, 0), (5, 2), (8, 4)])
    def test_reflect_index_matches_numpy_pad(self, length, radius):
        index = keras.ops.convert_to_numpy(_reflect_index(length, radius))
        expected = np.pad(np.arange(length), radius, mode="reflect")
        np.testing.assert_array_equal(index, expected)

    @pytest.mark.parametrize("capacity", [None, 2, 4])
    def test_blur_selected_matches_2d_convolution(self, capacity):
        # Non-square images: radius (12 * 0.5) // 2 = 3 rows and
        # (10 * 0.5) // 2 = 2 columns; capacity 2 takes two loop steps.
        x = images(5, 12, 10, seed=1)
        sigma = np.array([0.4, 1.0, 1.5, 2.0, 0.7], "float32")
        apply = np.array([True, False, True, True, False])
        out = keras.ops.convert_to_numpy(
            blur_selected(x, sigma, apply, 0.5, capacity)
        )
        for i in range(5):
            expected = np_blur_2d(x[i], sigma[i], 3, 2) if apply[i] else x[i]
            self.assertAllClose(out[i], expected, atol=1e-5)

    def test_blur_selected_none_and_all(self):
        x = images(4, 8, 8)
        sigma = np.ones(4, "float32")
        none = blur_selected(x, sigma, np.zeros(4, bool), 0.5, 2)
        self.assertAllClose(none, x, atol=0)
        every = blur_selected(x, sigma, np.ones(4, bool), 0.5, 3)
        self.assertAllClose(every, gaussian_blur(x, sigma, 0.5), atol=1e-6)

    @pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
    def test_blur_rate(self, p):
        x = images(2000, 6, 6)
        # sigma >= 1 so that every blurred image visibly changes.
        layer = RandomGaussianBlur(
            p=p, sigma=(1.0, 2.0), kernel_fraction=0.5, seed=3
        )
        out = keras.ops.convert_to_numpy(layer(x, training=True))
        blurred = np.abs(out - x).max(axis=(1, 2, 3)) > 1e-6
        assert abs(blurred.mean() - p) <= 5 * np.sqrt(p * (1 - p) / 2000)

    def test_output_matches_sampled_sigma(self):
        x = images(16, 10, 10)
        sigma, apply = RandomGaussianBlur(seed=4).sample_params(16)
        out = RandomGaussianBlur(seed=4, kernel_fraction=0.5)(x, training=True)
        sigma = keras.ops.convert_to_numpy(sigma)
        apply = keras.ops.convert_to_numpy(apply)
        assert sigma.min() >= 0.1 and sigma.max() <= 2.0
        for i in range(16):
            expected = np_blur(x[i], sigma[i], 2) if apply[i] else x[i]
            self.assertAllClose(out[i], expected, atol=1e-5)

    def test_small_images_have_identity_kernel(self):
        x = images(2, 8, 8)
        out = RandomGaussianBlur(p=1.0, seed=0)(x, training=True)
        self.assertAllClose(out, x, atol=1e-7)  # 8 * 0.1 // 2 = 0 taps

    def test_same_seed_same_output(self):
        x = images(6, 12, 12)
        a = RandomGaussianBlur(kernel_fraction=0.5, seed=7)(x, training=True)
        b = RandomGaussianBlur(kernel_fraction=0.5, seed=7)(x, training=True)
        c = RandomGaussianBlur(kernel_fraction=0.5, seed=9)(x, training=True)
        self.assertAllClose(a, b, atol=0)
        assert np.abs(keras.ops.convert_to_numpy(a - c)).max() > 1e-3

    def test_training_shapes_and_unbatched(self):
        x = np.random.randint(0, 256, (3, 20, 20, 3), dtype="uint8")
        layer = RandomGaussianBlur(p=1.0, seed=0)
        out = layer(x, training=True)
        self.assertShape(out, (3, 20, 20, 3))
        self.assertDType(out, "float32")
        self.assertShape(layer(x[0], training=True), (20, 20, 3))

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"p": 1.1}, "p"),
            ({"p": -0.1}, "p"),
            ({"sigma": (0.0, 1.0)}, "sigma"),
            ({"sigma": (2.0, 1.0)}, "sigma"),
            ({"kernel_fraction": 0.0}, "kernel_fraction"),
            ({"kernel_fraction": 1.5}, "kernel_fraction"),
        ],
    )
    def test_validation(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            RandomGaussianBlur(**kwargs)

    @TF_ONLY
    def test_in_tf_data(self):
        import tensorflow as tf

        x = np.random.randint(0, 256, (8, 20, 20, 3), dtype="uint8")
        layer = RandomGaussianBlur(p=0.5, seed=0)
        ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
        batches = list(ds.map(lambda x: layer(x, training=True)))
        assert [tuple(b.shape) for b in batches] == [(4, 20, 20, 3)] * 2
        ds = tf.data.Dataset.from_tensor_slices(x)
        ds = ds.map(lambda x: layer(x, training=True))
        assert tuple(next(iter(ds)).shape) == (20, 20, 3)

    @TF_ONLY
    def test_jit_compiled(self):
        import tensorflow as tf

        x = images(8, 20, 20)
        layer = RandomGaussianBlur(p=0.5, seed=0)
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        a, b = fn(x), fn(x)
        self.assertShape(a, (8, 20, 20, 3))
        assert np.abs(a.numpy() - b.numpy()).max() > 0

    @pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
    def test_jax_jit(self):
        import jax

        layer = RandomGaussianBlur(p=0.5, seed=0)
        state = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def fn(state, x):
            return layer.stateless_call([], state, x, training=True)

        a, state = fn(state, images(8, 20, 20))
        b, _ = fn(state, images(8, 20, 20))
        self.assertShape(a, (8, 20, 20, 3))
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0
