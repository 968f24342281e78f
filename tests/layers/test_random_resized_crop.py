import keras
import numpy as np
import pytest

from keras_ssl.layers import RandomResizedCrop
from keras_ssl.layers.random_resized_crop import center_box
from keras_ssl.layers.random_resized_crop import crop_and_resize
from keras_ssl.testing import TestCase

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data / tf.function need the TensorFlow backend",
)


def np_crop_and_resize(image, box, size, flip=False):
    """Bilinear crop of one (H, W, C) image, half-pixel centres, float64."""
    height, width = image.shape[:2]
    out_h, out_w = size
    y0, x0, y1, x1 = box

    def taps(start, end, num, length, mirrored):
        t = (np.arange(num) + 0.5) / num
        if mirrored:
            t = 1.0 - t
        pos = np.clip((start + (end - start) * t) * length - 0.5, 0, length - 1)
        low = np.floor(pos).astype(int)
        return low, np.minimum(low + 1, length - 1), pos - low

    r0, r1, fy = taps(y0, y1, out_h, height, False)
    c0, c1, fx = taps(x0, x1, out_w, width, flip)
    image = image.astype(np.float64)
    rows = image[r0] * (1 - fy)[:, None, None] + image[r1] * fy[:, None, None]
    return (
        rows[:, c0] * (1 - fx)[None, :, None] + rows[:, c1] * fx[None, :, None]
    )


def coordinate_images(batch, height, width):
    """Channel 0 holds the row, channel 1 the column, in [0, 1]."""
    rows = np.linspace(0, 1, height)[:, None] * np.ones((1, width))
    cols = np.ones((height, 1)) * np.linspace(0, 1, width)[None, :]
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1)
    return np.repeat(image[None], batch, axis=0).astype("float32")


class TestRandomResizedCrop(TestCase):
    def test_contract(self):
        images = np.random.randint(0, 256, (2, 24, 20, 3), dtype="uint8")
        self.run_layer_contract(
            RandomResizedCrop,
            {"size": 16, "eval_crop_proportion": 0.875, "seed": 1},
            images,
            expected_output_shape=(2, 16, 16, 3),
            # Augmentation computes and returns float32 under any policy.
            expected_mixed_output_dtype="float32",
        )

    def test_training_shapes_dtype_range(self):
        images = np.random.randint(0, 256, (3, 20, 28, 3), dtype="uint8")
        layer = RandomResizedCrop((8, 12), seed=0)
        out = keras.ops.convert_to_numpy(layer(images, training=True))
        self.assertShape(out, (3, 8, 12, 3))
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        single = layer(images[0], training=True)
        self.assertShape(single, (8, 12, 3))

    def test_uint8_is_divided_by_255(self):
        images = np.full((2, 8, 8, 3), 255, dtype="uint8")
        out = RandomResizedCrop(4, seed=0)(images, training=True)
        self.assertAllClose(out, np.ones((2, 4, 4, 3)))

    def test_uint8_white_stays_exactly_one(self):
        # The division by 255 is exact: no value above 1 after the resize.
        images = np.full((6, 9, 7, 3), 255, dtype="uint8")
        layer = RandomResizedCrop((5, 8), seed=2)
        boxes, flips = layer.sample_boxes(6, 9, 7)
        out = keras.ops.convert_to_numpy(
            crop_and_resize(images, boxes, (5, 8), flips)
        )
        np.testing.assert_array_equal(out, np.ones_like(out))

    def test_crop_and_resize_matches_numpy(self):
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(3, 12, 10, 2)).astype("float32")
        boxes = np.array(
            [[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.5, 0.4, 0.6]],
            dtype="float32",
        )
        flips = np.array([False, True, True])
        out = crop_and_resize(images, boxes, (7, 5), flips)
        for i in range(3):
            expected = np_crop_and_resize(images[i], boxes[i], (7, 5), flips[i])
            self.assertAllClose(out[i], expected, atol=1e-5)

    def test_crop_and_resize_uint8_matches_numpy(self):
        images = np.random.randint(0, 256, (2, 9, 9, 3), dtype="uint8")
        boxes = np.array([[0.2, 0.1, 0.9, 0.6]] * 2, dtype="float32")
        out = crop_and_resize(images, boxes, 6)
        expected = np_crop_and_resize(images[1], boxes[1], (6, 6)) / 255.0
        self.assertAllClose(out[1], expected, atol=1e-5)

    @TF_ONLY
    def test_full_box_matches_tf_image_resize(self):
        import tensorflow as tf

        images = np.random.uniform(size=(2, 16, 12, 3)).astype("float32")
        boxes = np.array([[0.0, 0.0, 1.0, 1.0]] * 2, dtype="float32")
        out = crop_and_resize(images, boxes, (7, 9))
        expected = tf.image.resize(images, (7, 9), method="bilinear")
        self.assertAllClose(out, expected, atol=1e-5)

    def test_full_box_same_size_is_identity(self):
        images = np.random.uniform(size=(2, 10, 10, 3)).astype("float32")
        boxes = np.array([[0.0, 0.0, 1.0, 1.0]] * 2, dtype="float32")
        self.assertAllClose(crop_and_resize(images, boxes, 10), images)

    @pytest.mark.parametrize(
        "scale", [(0.08, 1.0), (0.14, 1.0), (0.05, 0.14), (0.75, 1.0)]
    )
    def test_sampled_boxes_area_ratio_and_position(self, scale):
        layer = RandomResizedCrop(8, scale=scale, seed=3)
        boxes, flips = layer.sample_boxes(4000, 32, 48)
        boxes = keras.ops.convert_to_numpy(boxes).astype(np.float64)
        heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = heights * widths
        assert area.min() >= scale[0] - 1e-5
        assert area.max() <= scale[1] + 1e-5
        aspect = (widths * 48) / (heights * 32)
        assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
        assert boxes.min() >= -1e-6 and boxes.max() <= 1 + 1e-6
        # Positions spread over the whole allowed range, not just centred.
        slack = 1.0 - heights
        rel = boxes[:, 0] / np.maximum(slack, 1e-9)
        rel = rel[slack > 0.05]
        assert rel.min() < 0.05 and rel.max() > 0.95
        flip_rate = keras.ops.convert_to_numpy(flips).mean()
        assert abs(flip_rate - 0.5) < 5 * np.sqrt(0.25 / 4000)

    def test_area_distribution(self):
        boxes, _ = RandomResizedCrop(8, seed=4).sample_boxes(4000, 32, 32)
        boxes = keras.ops.convert_to_numpy(boxes)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # On a square image every window of area <= 3/4 fits whatever its
        # aspect ratio, so below 3/4 the area is uniform (candidates are
        # drawn uniformly and accepted); above it, extreme aspect ratios
        # are rejected and the density drops, but stays positive.
        counts, _ = np.histogram(area, bins=6, range=(0.08, 0.74))
        mean = counts.mean()
        chi2 = ((counts - mean) ** 2 / mean).sum()
        assert chi2 < 25.7, counts  # chi-square, 5 dof, p = 1e-4
        assert (area > 0.95).sum() > 10

    def test_output_follows_sampled_boxes(self):
        # Two layers with one seed draw the same boxes; the crop of a
        # coordinate image then shows where each box is.
        images = coordinate_images(64, 32, 32)
        boxes, flips = RandomResizedCrop(8, seed=5).sample_boxes(64, 32, 32)
        out = RandomResizedCrop(8, seed=5)(images, training=True)
        expected = crop_and_resize(images, boxes, 8, flips)
        self.assertAllClose(out, expected, atol=1e-6)
        out = keras.ops.convert_to_numpy(out)
        boxes = keras.ops.convert_to_numpy(boxes)
        flips = keras.ops.convert_to_numpy(flips)
        # Output rows 0 and 7 sample the box at 1/16 and 15/16 of its
        # height: 7/8 of it, in input pixels (clamping at the border may
        # cut up to half a pixel at each end). Channel 0 is row / 31.
        row_span = (out[:, -1, 0, 0] - out[:, 0, 0, 0]) * 31
        box_rows = (boxes[:, 2] - boxes[:, 0]) * 32 * 7 / 8
        np.testing.assert_array_less(row_span, box_rows + 1e-3)
        np.testing.assert_array_less(box_rows - 1 - 1e-3, row_span)
        # Flipped crops run right to left.
        col_step = out[:, 0, -1, 1] - out[:, 0, 0, 1]
        np.testing.assert_array_equal(col_step < 0, flips)

    def test_no_flip(self):
        _, flips = RandomResizedCrop(8, flip=False, seed=0).sample_boxes(
            500, 16, 16
        )
        assert not keras.ops.convert_to_numpy(flips).any()

    def test_same_seed_same_output(self):
        images = np.random.randint(0, 256, (4, 16, 16, 3), dtype="uint8")
        a = RandomResizedCrop(8, seed=7)(images, training=True)
        b = RandomResizedCrop(8, seed=7)(images, training=True)
        c = RandomResizedCrop(8, seed=8)(images, training=True)
        self.assertAllClose(a, b, atol=0)
        assert np.abs(keras.ops.convert_to_numpy(a - c)).max() > 0.01

    def test_eval_identity_and_center_crop(self):
        images = np.random.randint(0, 256, (2, 16, 16, 3), dtype="uint8")
        out = RandomResizedCrop(16)(images, training=False)
        self.assertAllClose(out, images / 255.0)
        layer = RandomResizedCrop(8, eval_crop_proportion=0.5)
        out = layer(images, training=False)
        expected = np_crop_and_resize(
            images[0], (0.25, 0.25, 0.75, 0.75), (8, 8)
        )
        self.assertAllClose(out[0], expected / 255.0, atol=1e-5)
        self.assertAllClose(out, layer(images, training=False), atol=0)

    def test_center_box_keeps_output_aspect(self):
        # A 20 x 40 image cropped to a square: the 20 x 20 centre, scaled.
        box = keras.ops.convert_to_numpy(center_box(20, 40, (8, 8), 0.875))
        self.assertAllClose(box, [0.0625, 0.28125, 0.9375, 0.71875])

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"size": 0}, "size"),
            ({"size": (4, 4, 4)}, "size"),
            ({"size": 8, "scale": (0.0, 1.0)}, "scale"),
            ({"size": 8, "scale": (0.5, 0.2)}, "scale"),
            ({"size": 8, "scale": (0.5, 1.5)}, "scale"),
            ({"size": 8, "ratio": (2.0, 1.0)}, "ratio"),
            ({"size": 8, "ratio": (0.0, 1.0)}, "ratio"),
            ({"size": 8, "eval_crop_proportion": 0.0}, "eval_crop_proportion"),
        ],
    )
    def test_validation(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            RandomResizedCrop(**kwargs)

    @TF_ONLY
    def test_in_tf_data(self):
        import tensorflow as tf

        images = np.random.randint(0, 256, (8, 16, 16, 3), dtype="uint8")
        layer = RandomResizedCrop(8, seed=0)
        ds = tf.data.Dataset.from_tensor_slices(images).batch(4)
        ds = ds.map(lambda x: layer(x, training=True))
        batches = list(ds)
        assert [tuple(b.shape) for b in batches] == [(4, 8, 8, 3)] * 2
        assert batches[0].dtype == tf.float32
        ds = tf.data.Dataset.from_tensor_slices(images)
        ds = ds.map(lambda x: layer(x, training=True))
        assert tuple(next(iter(ds)).shape) == (8, 8, 3)

    @TF_ONLY
    def test_jit_compiled(self):
        import tensorflow as tf

        images = np.random.randint(0, 256, (4, 16, 16, 3), dtype="uint8")
        layer = RandomResizedCrop(8, seed=0)
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        a, b = fn(images), fn(images)
        self.assertShape(a, (4, 8, 8, 3))
        assert np.abs(a.numpy() - b.numpy()).max() > 0  # fresh randomness

    @pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
    def test_jax_jit(self):
        import jax

        images = np.random.randint(0, 256, (4, 16, 16, 3), dtype="uint8")
        layer = RandomResizedCrop(8, seed=0)
        state = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def fn(state, x):
            return layer.stateless_call([], state, x, training=True)

        a, state = fn(state, images)
        b, _ = fn(state, images)
        self.assertShape(a, (4, 8, 8, 3))
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0
