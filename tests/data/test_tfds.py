import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_ssl.data import from_tfds
from keras_ssl.data import labeled_subset
from keras_ssl.testing import TestCase


class TestFromTfds(TestCase):
    def test_cifar10_examples(self):
        with tfds.testing.mock_data(num_examples=12):
            raw = tfds.load("cifar10", split="train", shuffle_files=False)
            raw = list(raw.as_numpy_iterator())
            dataset = from_tfds("cifar10", "train")
            pairs = list(dataset.as_numpy_iterator())
        assert dataset.element_spec[0] == tf.TensorSpec((32, 32, 3), tf.uint8)
        assert dataset.element_spec[1].dtype == tf.int32
        assert len(pairs) == 12
        for (image, label), element in zip(pairs, raw):
            np.testing.assert_array_equal(image, element["image"])
            assert label == element["label"]

    def test_batched_shuffled_and_deterministic(self):
        with tfds.testing.mock_data(num_examples=12):
            ordered = from_tfds("cifar10", "train", batch_size=12)
            kwargs = dict(batch_size=5, shuffle=True, seed=3)
            a = list(
                from_tfds("cifar10", "train", **kwargs).as_numpy_iterator()
            )
            b = list(
                from_tfds("cifar10", "train", **kwargs).as_numpy_iterator()
            )
            ordered = next(ordered.as_numpy_iterator())
        assert [len(batch[1]) for batch in a] == [5, 5, 2]
        for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
            np.testing.assert_array_equal(images_a, images_b)
            np.testing.assert_array_equal(labels_a, labels_b)
        shuffled = np.concatenate([batch[0] for batch in a])
        # The same examples, in another order.
        assert not np.array_equal(shuffled, ordered[0])
        key = lambda images: sorted(i.tobytes() for i in images)  # noqa: E731
        assert key(shuffled) == key(ordered[0])

    def test_image_size_and_no_labels(self):
        with tfds.testing.mock_data(num_examples=4):
            dataset = from_tfds(
                "cifar10", "test", batch_size=2, image_size=16, label_key=None
            )
            batch = next(dataset.as_numpy_iterator())
        assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8

    def test_bad_keys_and_arguments_raise(self):
        with tfds.testing.mock_data(num_examples=4):
            with pytest.raises(ValueError, match="image_key='img'"):
                from_tfds("cifar10", "train", image_key="img")
            with pytest.raises(ValueError, match="label_key='class'"):
                from_tfds("cifar10", "train", label_key="class")
            with pytest.raises(ValueError, match="batch_size=0"):
                from_tfds("cifar10", "train", batch_size=0)
            with pytest.raises(ValueError, match="image_size"):
                from_tfds("cifar10", "train", image_size=(4, 4, 4))

    def test_varying_sizes_need_image_size(self):
        with tfds.testing.mock_data(num_examples=3):
            with pytest.raises(ValueError, match="image_size=None"):
                from_tfds("imagenet2012", "train", batch_size=2)
            dataset = from_tfds(
                "imagenet2012", "train", batch_size=3, image_size=(8, 12)
            )
            images, labels = next(dataset.as_numpy_iterator())
        assert images.shape == (3, 8, 12, 3) and labels.dtype == np.int32

    def test_imagenet_index_file_through_file_name(self, tmp_path):
        with tfds.testing.mock_data(num_examples=6):
            raw = tfds.load("imagenet2012", split="train", shuffle_files=False)
            names = [e["file_name"].decode() for e in raw.as_numpy_iterator()]
            index_file = tmp_path / "10percent.txt"
            index_file.write_text(f"{names[4]}\n{names[1]}\n")
            subset = labeled_subset(raw, index_file=str(index_file))
            pairs = list(subset.dataset.as_numpy_iterator())
        np.testing.assert_array_equal(subset.indices, [1, 4])
        assert len(pairs) == 2 and pairs[0][0].dtype == np.uint8
