import keras
import numpy as np
import pytest

from keras_ssl.data import SupportSampler
from keras_ssl.testing import TestCase


def _labeled(counts, size=4):
    """Distinct images; class c has counts[c] of them."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    y = np.random.default_rng(0).permutation(y)
    x = np.random.default_rng(1).integers(0, 256, (len(y), size, size, 3))
    return x.astype("uint8"), y


def _rows(images, x):
    lookup = {row.tobytes(): i for i, row in enumerate(x)}
    return np.array([lookup[image.tobytes()] for image in images])


class TestSupportSampler(TestCase):
    def test_batch_is_class_balanced_and_unique(self, tiny):
        x, y = tiny
        sampler = SupportSampler(
            x, y, classes_per_batch=3, images_per_class=4, seed=2
        )
        assert sampler.batch_size == 12
        for step in range(20):
            images, labels = sampler.sample(step)
            assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8
            assert labels.dtype == np.int32
            classes, counts = np.unique(labels, return_counts=True)
            assert len(classes) == 3 and np.all(counts == 4)
            # Class-major blocks in ascending class order.
            np.testing.assert_array_equal(labels, np.repeat(classes, 4))
            rows = _rows(images, x)
            assert len(set(rows.tolist())) == 12
            np.testing.assert_array_equal(y[rows], labels)

    def test_batches_vary_and_images_recur_across_steps(self, tiny):
        x, y = tiny
        sampler = SupportSampler(x, y, classes_per_batch=4, images_per_class=5)
        batches = [set(_rows(sampler.sample(s)[0], x)) for s in range(30)]
        assert len({frozenset(b) for b in batches}) == 30
        # With replacement across iterations: images are drawn again in
        # later batches (20 of 40 per batch: overlaps are certain).
        assert all(batches[s] & batches[s + 1] for s in range(29))

    def test_sampling_frequencies_are_uniform(self):
        x, y = _labeled([6, 6, 6, 6, 6])
        sampler = SupportSampler(x, y, classes_per_batch=2, images_per_class=3)
        steps = 3000
        class_hits = np.zeros(5)
        image_hits = np.zeros(len(y))
        for step in range(steps):
            rows = sampler.indices(step)
            class_hits[np.unique(y[rows])] += 1
            image_hits[rows] += 1
        # Each class is drawn with probability 2/5, each of its images
        # then with probability 3/6: 3000 * 0.4 = 1200 and 600 hits.
        # Binomial standard deviations: ~27 and ~22; allow 5 of them.
        np.testing.assert_allclose(class_hits, 1200, atol=5 * 27)
        np.testing.assert_allclose(image_hits, 600, atol=5 * 22)

    def test_deterministic_and_order_free(self, tiny):
        x, y = tiny
        a = SupportSampler(
            x, y, classes_per_batch=2, images_per_class=3, seed=9
        )
        b = SupportSampler(
            x, y, classes_per_batch=2, images_per_class=3, seed=9
        )
        c = SupportSampler(x, y, classes_per_batch=2, images_per_class=3)
        later = b.indices(7)
        np.testing.assert_array_equal(a.indices(7), later)
        np.testing.assert_array_equal(a[7][0], b.sample(7)[0])
        assert not np.array_equal(a.indices(7), c.indices(7))

    @pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
    def test_one_hot_labels_match_numpy(self, tiny, smoothing):
        x, y = tiny
        sampler = SupportSampler(
            x,
            y,
            classes_per_batch=2,
            images_per_class=2,
            label_smoothing=smoothing,
            num_classes=6,
        )
        labels = np.array([0, 3, 5, 3])
        expected = np.zeros((4, 6))
        for row, label in enumerate(labels):
            for k in range(6):
                expected[row, k] = (1 - smoothing) * (
                    k == label
                ) + smoothing / 6
        targets = sampler.one_hot_labels(labels)
        assert targets.dtype == np.float32
        self.assertAllClose(targets, expected, atol=1e-7)
        self.assertAllClose(targets.sum(axis=1), np.ones(4), atol=1e-6)

    def test_py_dataset_batches(self, tiny):
        x, y = tiny
        sampler = SupportSampler(
            x,
            y,
            classes_per_batch=4,
            images_per_class=2,
            one_hot=True,
            label_smoothing=0.1,
        )
        assert isinstance(sampler, keras.utils.PyDataset)
        assert sampler.num_batches is None
        images, targets = sampler[5]
        labels = sampler.sample(5)[1]
        self.assertAllClose(targets, sampler.one_hot_labels(labels))
        features = sampler.features(5)
        assert sorted(features) == [
            "support",
            "support_labels",
            "support_targets",
        ]

    def test_to_tf_dataset_repeats_the_draws(self, tiny):
        pytest.importorskip("tensorflow")
        x, y = tiny
        sampler = SupportSampler(x, y, classes_per_batch=2, images_per_class=2)
        batches = list(sampler.to_tf_dataset().take(3).as_numpy_iterator())
        for step, (images, labels) in enumerate(batches):
            expected_images, expected_labels = sampler.sample(step)
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)

    def test_too_few_classes_raises(self, tiny):
        x, y = tiny
        with pytest.raises(ValueError, match="\\(4\\).*classes_per_batch=5"):
            SupportSampler(x, y, classes_per_batch=5, images_per_class=1)

    def test_small_class_raises_naming_it(self):
        x, y = _labeled([5, 2, 5])
        with pytest.raises(
            ValueError, match="class 1 has 2.*images_per_class=3"
        ):
            SupportSampler(x, y, classes_per_batch=2, images_per_class=3)
        sampler = SupportSampler(
            x, y, classes_per_batch=3, images_per_class=3, replacement=True
        )
        labels = sampler.sample(0)[1]
        np.testing.assert_array_equal(np.bincount(labels), [3, 3, 3])

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"classes_per_batch": 0}, "classes_per_batch=0"),
            ({"images_per_class": -1}, "images_per_class=-1"),
            ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
            ({"num_classes": 3}, "num_classes=3"),
            ({"seed": 1.5}, "seed=1.5"),
        ],
    )
    def test_bad_arguments_raise(self, tiny, kwargs, message):
        x, y = tiny
        args = {"classes_per_batch": 2, "images_per_class": 2, **kwargs}
        with pytest.raises(ValueError, match=message):
            SupportSampler(x, y, **args)

    def test_no_labeled_data_raises(self):
        with pytest.raises(ValueError, match="no labeled images"):
            SupportSampler(
                np.zeros((0, 4, 4, 3), "uint8"),
                np.zeros((0,), "int64"),
                classes_per_batch=1,
                images_per_class=1,
            )
