import math

import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import from_arrays
from keras_ssl.data import labeled_subset
from keras_ssl.testing import TestCase


def _unbalanced():
    """Class c has 5 + 3c images (5, 8, 11, 14), interleaved."""
    y = np.concatenate([np.full(5 + 3 * c, c) for c in range(4)])
    y = np.random.default_rng(0).permutation(y)
    x = np.random.default_rng(1).integers(0, 256, (len(y), 4, 4, 3), "uint8")
    return x, y


class TestLabeledSubset(TestCase):
    def test_per_class_is_balanced_and_consistent(self, tiny):
        x, y = tiny
        subset = labeled_subset((x, y), per_class=3, seed=7)
        assert len(subset) == 12
        assert np.all(np.diff(subset.indices) > 0)
        np.testing.assert_array_equal(np.bincount(subset.y), [3, 3, 3, 3])
        np.testing.assert_array_equal(subset.x, x[subset.indices])
        np.testing.assert_array_equal(subset.y, y[subset.indices])
        assert subset.y.dtype == np.int32 and subset.x.dtype == np.uint8

    def test_deterministic_per_seed(self, tiny):
        x, y = tiny
        a = labeled_subset((x, y), per_class=3, seed=7).indices
        b = labeled_subset((x, y), per_class=3, seed=7).indices
        c = labeled_subset((x, y), per_class=3, seed=8).indices
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)

    def test_a_class_subset_does_not_depend_on_other_classes(self, tiny):
        x, y = tiny
        full = labeled_subset((x, y), per_class=3, seed=7)
        keep = np.flatnonzero(y != 3)
        part = labeled_subset((x[keep], y[keep]), per_class=3, seed=7)
        for c in range(3):
            np.testing.assert_array_equal(
                part.x[part.y == c], full.x[full.y == c]
            )

    def test_accepts_an_array_dataset(self, tiny):
        x, y = tiny
        subset = labeled_subset(from_arrays(x, y), per_class=2)
        assert len(subset) == 8

    @pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
    def test_fraction_rounds_half_up_per_class(self, fraction):
        x, y = _unbalanced()
        subset = labeled_subset((x, y), fraction=fraction)
        expected = [
            max(1, math.floor(fraction * (5 + 3 * c) + 0.5)) for c in range(4)
        ]
        np.testing.assert_array_equal(np.bincount(subset.y), expected)

    def test_too_few_images_names_the_class(self):
        x, y = _unbalanced()
        with pytest.raises(ValueError, match="class 0 has 5.*per_class=6"):
            labeled_subset((x, y), per_class=6)

    def test_missing_class_with_num_classes(self, tiny):
        x, y = tiny
        with pytest.raises(ValueError, match="class 4 has 0"):
            labeled_subset((x, y), per_class=1, num_classes=5)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({}, "exactly one"),
            ({"per_class": 2, "fraction": 0.5}, "exactly one"),
            ({"per_class": 0}, "per_class=0"),
            ({"fraction": 1.5}, "fraction=1.5"),
            ({"fraction": 0.0}, "fraction=0.0"),
            ({"per_class": 1, "seed": -3}, "seed=-3"),
        ],
    )
    def test_bad_arguments_raise(self, tiny, kwargs, message):
        with pytest.raises(ValueError, match=message):
            labeled_subset(tiny, **kwargs)

    def test_labels_out_of_range_raise(self, tiny):
        x, y = tiny
        with pytest.raises(ValueError, match="num_classes=3"):
            labeled_subset((x, y), per_class=1, num_classes=3)

    def test_index_file_selects_listed_names(self, tiny, tmp_path):
        x, y = tiny
        names = np.array(
            [f"train/n0{i % 4}/n0{i % 4}_{i}.JPEG" for i in range(40)]
        )
        index_file = tmp_path / "1percent.txt"
        listed = [5, 17, 2, 33]
        index_file.write_text(
            "".join(f"n0{i % 4}_{i}.JPEG\n" for i in listed) + "\n"
        )
        subset = labeled_subset(
            (x, y), index_file=str(index_file), filenames=names
        )
        np.testing.assert_array_equal(subset.indices, sorted(listed))
        np.testing.assert_array_equal(subset.x, x[sorted(listed)])

    def test_index_file_errors(self, tiny, tmp_path):
        x, y = tiny
        names = [f"img_{i}.png" for i in range(40)]
        index_file = tmp_path / "subset.txt"
        index_file.write_text("img_1.png\nimg_99.png\n")
        with pytest.raises(ValueError, match="img_99.png"):
            labeled_subset((x, y), index_file=str(index_file), filenames=names)
        with pytest.raises(ValueError, match="filenames=None"):
            labeled_subset((x, y), index_file=str(index_file))
        with pytest.raises(ValueError, match="index_file="):
            labeled_subset(
                (x, y), index_file=str(tmp_path / "nope.txt"), filenames=names
            )

    def test_tf_dataset_matches_array_path(self, tiny):
        x, y = tiny
        dataset = tf.data.Dataset.from_tensor_slices((x, y.astype("int64")))
        from_arrays_subset = labeled_subset((x, y), per_class=2, seed=4)
        subset = labeled_subset(dataset, per_class=2, seed=4)
        np.testing.assert_array_equal(
            subset.indices, from_arrays_subset.indices
        )
        assert subset.x is None
        pairs = list(subset.dataset.as_numpy_iterator())
        np.testing.assert_array_equal(
            np.stack([p[0] for p in pairs]), from_arrays_subset.x
        )
        labels = np.array([p[1] for p in pairs])
        np.testing.assert_array_equal(labels, from_arrays_subset.y)
        assert subset.dataset.element_spec[1].dtype == tf.int32

    def test_tf_dataset_of_dicts_with_file_names(self, tiny, tmp_path):
        x, y = tiny
        names = np.array([f"n0{i % 4}_{i}.JPEG" for i in range(40)])
        dataset = tf.data.Dataset.from_tensor_slices(
            {"image": x, "label": y, "file_name": names}
        )
        index_file = tmp_path / "10percent.txt"
        index_file.write_text("n00_8.JPEG\nn03_3.JPEG\n")
        subset = labeled_subset(dataset, index_file=str(index_file))
        np.testing.assert_array_equal(subset.indices, [3, 8])
        images = [image for image, _ in subset.dataset.as_numpy_iterator()]
        np.testing.assert_array_equal(np.stack(images), x[[3, 8]])

    def test_tf_dataset_with_bad_elements_raise(self, tiny, tmp_path):
        x, y = tiny
        floats = tf.data.Dataset.from_tensor_slices((x / 255.0, y))
        with pytest.raises(ValueError, match="uint8"):
            labeled_subset(floats, per_class=1)
        batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        with pytest.raises(ValueError, match="unbatched"):
            labeled_subset(batched, per_class=1)
        index_file = tmp_path / "subset.txt"
        index_file.write_text("a.png\n")
        pairs = tf.data.Dataset.from_tensor_slices((x, y))
        with pytest.raises(ValueError, match="file names"):
            labeled_subset(pairs, index_file=str(index_file))
