import os

import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import streaming
from keras_ssl.data._decode import center_window
from keras_ssl.data._decode import decode_window
from keras_ssl.data._decode import random_window
from keras_ssl.testing import TestCase


def _clean_table(root):
    """The training table without its corrupt file."""
    table = streaming.list_folder(os.path.join(root, "train"))
    good = [i for i, n in enumerate(table.names) if not n.endswith(b"_x.JPEG")]
    return table.take(good)


def _batches(dataset, count):
    return [b for _, b in zip(range(count), dataset.as_numpy_iterator())]


class TestDecode(TestCase):
    def test_jpeg_window_equals_decode_then_crop(self):
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        contents = tf.io.encode_jpeg(image, quality=95)
        full = tf.io.decode_jpeg(contents).numpy()
        png = tf.io.encode_png(image)
        for window in ((8, 16, 24, 32), (0, 0, 40, 56), (3, 5, 7, 11)):
            cropped = decode_window(contents, lambda h, w: window).numpy()
            y, x, h, w = window
            reference = full[y : y + h, x : x + w]
            assert cropped.shape == reference.shape
            # libjpeg decodes the window's blocks alone: equal up to the
            # upsampling of the colour planes at the window's border.
            assert np.mean(np.abs(cropped.astype(int) - reference)) < 2.0
            np.testing.assert_array_equal(
                decode_window(png, lambda h, w: window).numpy(),
                image[y : y + h, x : x + w],
            )

    def test_center_window(self):
        y, x, h, w = (int(v) for v in center_window(300, 400, (224, 224), 1.0))
        assert (y, x, h, w) == (0, 50, 300, 300)
        y, x, h, w = (
            int(v) for v in center_window(300, 400, (224, 224), 0.875)
        )
        assert (h, w) == (262, 262) and (y, x) == (19, 69)

    def test_random_window_follows_the_inception_distribution(self):
        scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
        windows = tf.data.Dataset.range(2000).map(
            lambda i: tf.stack(
                random_window(120, 160, tf.stack([3, i]), scale, ratio)
            )
        )
        y, x, h, w = np.stack(list(windows.as_numpy_iterator())).T
        assert np.all((y >= 0) & (y + h <= 120) & (x >= 0) & (x + w <= 160))
        areas, aspects = h * w / (120 * 160), w / h
        # Reference: the inception crop's first fitting candidate of ten,
        # area uniform in `scale`, log aspect uniform in log `ratio`.
        rng = np.random.default_rng(0)
        area = rng.uniform(*scale, (20000, 10)) * 120 * 160
        aspect = np.exp(rng.uniform(*np.log(ratio), (20000, 10)))
        ref_h = np.round(np.sqrt(area / aspect))
        ref_w = np.round(np.sqrt(area * aspect))
        fits = (ref_h <= 120) & (ref_w <= 160)
        first = np.argmax(fits, axis=1)
        rows = np.arange(20000)
        reference = ref_h[rows, first] * ref_w[rows, first] / (120 * 160)
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(areas, q) - np.quantile(reference, q)) < 0.04
        ref_aspect = ref_w[rows, first] / ref_h[rows, first]
        assert np.all((aspects > 0.72) & (aspects < 1.4))
        for q in (0.1, 0.5, 0.9):
            assert (
                abs(np.quantile(aspects, q) - np.quantile(ref_aspect, q)) < 0.03
            )


class TestImageStream(TestCase):
    def test_batches_and_epochs_visit_every_image(self, image_folder):
        table = _clean_table(image_folder[0])
        stream = streaming.ImageStream(table, 8, 16, seed=1)
        assert len(stream) == 6  # 48 // 8 steps per epoch
        batches = _batches(stream.to_tf_dataset(), 12)
        images, labels, ids = batches[0]
        assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(labels, table.labels[ids])
        first = np.concatenate([b[2] for b in batches[:6]])
        second = np.concatenate([b[2] for b in batches[6:]])
        np.testing.assert_array_equal(np.sort(first), np.sort(table.ids))
        np.testing.assert_array_equal(np.sort(second), np.sort(table.ids))
        assert not np.array_equal(first, second)

    @pytest.mark.parametrize("crop", ["full", "random"])
    def test_resume_is_exact(self, image_folder, crop):
        table = _clean_table(image_folder[0])
        stream = streaming.ImageStream(table, 8, 16, crop=crop, seed=2)
        uninterrupted = _batches(stream.to_tf_dataset(), 9)
        resumed = _batches(stream.to_tf_dataset(start_step=5), 4)
        for a, b in zip(uninterrupted[5:], resumed):
            for part_a, part_b in zip(a, b):
                np.testing.assert_array_equal(part_a, part_b)

    def test_pipelines_share_each_global_batch(self, image_folder):
        table = _clean_table(image_folder[0])
        stream = streaming.ImageStream(table, 8, 16, seed=3)
        whole = _batches(stream.to_tf_dataset(start_step=4), 3)
        shares = []
        for pipeline in range(2):
            # 2 workers with 2 replicas each: per-replica batches of 2.
            context = tf.distribute.InputContext(2, pipeline, 4)
            shares.append(_batches(stream.to_tf_dataset(context, 4), 6))
        for step in range(3):
            pieces = [share[2 * step + r] for share in shares for r in range(2)]
            assert all(len(p[2]) == 2 for p in pieces)
            np.testing.assert_array_equal(
                np.concatenate([p[2] for p in pieces]), whole[step][2]
            )
            np.testing.assert_array_equal(
                np.concatenate([p[0] for p in pieces]), whole[step][0]
            )
        with pytest.raises(ValueError, match="batch_size=8"):
            stream.to_tf_dataset(tf.distribute.InputContext(1, 0, 3))

    def test_corrupt_file(self, image_folder):
        table = streaming.list_folder(os.path.join(image_folder[0], "train"))
        skipping = streaming.ImageStream(
            table, 7, 16, repeat=False, shuffle=False, skip_corrupt=True
        )
        ids = np.concatenate([b[2] for b in skipping.to_tf_dataset()])
        assert len(ids) == 48
        corrupt = [i for i, n in enumerate(table.names) if b"_x" in n]
        assert corrupt[0] not in ids
        failing = streaming.ImageStream(table, 7, 16, repeat=False)
        with pytest.raises(tf.errors.InvalidArgumentError):
            list(failing.to_tf_dataset())

    def test_evaluation_stream_is_one_ordered_pass(self, image_folder):
        table = streaming.list_folder(os.path.join(image_folder[0], "val"))
        stream = streaming.ImageStream(
            table, 5, 16, crop="center", shuffle=False, repeat=False
        )
        batches = list(stream.to_tf_dataset().as_numpy_iterator())
        assert [len(b[2]) for b in batches] == [5, 5, 5, 1]
        np.testing.assert_array_equal(
            np.concatenate([b[2] for b in batches]), np.arange(16)
        )

    def test_tfds_records_resume(self, tfds_dir):
        table = streaming.list_tfds("imagenet2012", "train", tfds_dir)
        stream = streaming.ImageStream(table, 4, 16, seed=4)
        whole = _batches(stream.to_tf_dataset(), 10)
        resumed = _batches(stream.to_tf_dataset(start_step=7), 3)
        for a, b in zip(whole[7:], resumed):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        labeled = streaming.read_labels(table)
        ids = np.concatenate([b[2] for b in whole[:8]])
        np.testing.assert_array_equal(np.sort(ids), np.arange(32))
        labels = np.concatenate([b[1] for b in whole[:8]])
        np.testing.assert_array_equal(labels, labeled.labels[ids])

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(batch_size=0), "batch_size=0"),
            (dict(batch_size=100), "batch_size=100"),
            (dict(image_size=None), "image_size=None"),
            (dict(crop="inception"), "crop='inception'"),
            (dict(crop_scale=(0.5, 0.1)), "crop_scale"),
            (dict(center_proportion=0.0), "center_proportion=0.0"),
            (dict(seed=-1), "seed=-1"),
        ],
    )
    def test_bad_arguments_raise(self, image_folder, kwargs, match):
        table = _clean_table(image_folder[0])
        arguments = dict(table=table, batch_size=8, image_size=16)
        with pytest.raises(ValueError, match=match):
            streaming.ImageStream(**{**arguments, **kwargs})
