import numpy as np
import pytest

from keras_ssl.data import SupportSampler
from keras_ssl.data import streaming
from keras_ssl.testing import TestCase
from tests.data.streaming_fixtures import folder_tables


class TestSupportStream(TestCase):
    def test_rows_are_the_support_samplers(self, image_folder):
        _, labeled = folder_tables(image_folder[0])
        support = streaming.SupportStream(labeled, 3, 2, 16, seed=7)
        sampler = SupportSampler(
            np.zeros((len(labeled), 1, 1, 3), np.uint8),
            labeled.labels,
            classes_per_batch=3,
            images_per_class=2,
            seed=7,
        )
        batches = support.to_tf_dataset(start_step=5).as_numpy_iterator()
        for step in range(5, 8):
            images, labels = next(batches)
            assert images.shape == (6, 16, 16, 3)
            np.testing.assert_array_equal(
                labels, labeled.labels[sampler.indices(step)]
            )
            # Class-balanced: 3 distinct classes, 2 images each.
            assert sorted(np.bincount(labels)[np.unique(labels)]) == [2] * 3

    def test_needs_labels(self, tfds_dir):
        table = streaming.list_tfds("imagenet2012", "train", tfds_dir)
        with pytest.raises(ValueError, match="read_labels"):
            streaming.SupportStream(table, 2, 2, 16)


def test_support_with_replacement_beyond_the_table(image_folder):
    table, _ = folder_tables(image_folder[0])
    few = streaming.select_balanced(table, per_class=1)
    support = streaming.SupportStream(few, 4, 3, 16, replacement=True)
    images, labels = next(support.to_tf_dataset().as_numpy_iterator())
    assert images.shape == (12, 16, 16, 3)
    assert sorted(np.bincount(labels)) == [3, 3, 3, 3]
