import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import streaming
from keras_ssl.testing import TestCase
from tests.data.streaming_fixtures import folder_tables


def _stream(root, **kwargs):
    table, labeled = folder_tables(root)
    support = streaming.SupportStream(labeled, 2, 3, 16, seed=1)
    return streaming.StreamingDataset(
        streaming.ImageStream(table, 8, 16, seed=1),
        labeled=streaming.ImageStream(labeled, 4, 16, seed=1, salt=1),
        support=support,
        **kwargs,
    )


class TestStreamingDataset(TestCase):
    def test_dict_batches(self, image_folder):
        stream = _stream(image_folder[0], image_ids=True, monitor_labels=True)
        table, labeled = folder_tables(image_folder[0])
        assert stream.num_batches is None and stream.steps_per_epoch == 6
        batch = next(stream.to_tf_dataset().as_numpy_iterator())
        shapes = {k: v.shape for k, v in batch.items()}
        assert shapes == {
            "unlabeled": (8, 16, 16, 3),
            "unlabeled_ids": (8,),
            "unlabeled_labels": (8,),
            "labeled": (4, 16, 16, 3),
            "labels": (4,),
            "labeled_ids": (4,),
            "support": (6, 16, 16, 3),
            "support_labels": (6,),
        }
        # Ids are rows of the training table, for both parts.
        rows = np.searchsorted(table.ids, batch["unlabeled_ids"])
        np.testing.assert_array_equal(
            batch["unlabeled_labels"], table.labels[rows]
        )
        assert set(batch["labeled_ids"]) <= set(labeled.ids.tolist())
        rows = np.searchsorted(table.ids, batch["labeled_ids"])
        np.testing.assert_array_equal(batch["labels"], table.labels[rows])

    def test_resume_and_shares_are_exact(self, image_folder):
        stream = _stream(image_folder[0], image_ids=True)
        whole = list(
            stream.to_tf_dataset(start_step=3).take(2).as_numpy_iterator()
        )
        context = tf.distribute.InputContext(2, 1, 2)
        share = list(
            stream.to_tf_dataset(context, 3).take(2).as_numpy_iterator()
        )
        for full, half in zip(whole, share):
            for key, value in half.items():
                # Pipeline 1 of 2 holds the second half of each batch.
                np.testing.assert_array_equal(
                    value, full[key][len(full[key]) // 2 :]
                )

    def test_bad_parts_raise(self, image_folder):
        table, _ = folder_tables(image_folder[0])
        with pytest.raises(ValueError, match="`unlabeled` must be"):
            streaming.StreamingDataset(table)
        with pytest.raises(ValueError, match="`support` must be"):
            streaming.StreamingDataset(
                streaming.ImageStream(table, 8, 16), support=object()
            )


def test_distribute_under_a_strategy(image_folder):
    stream = _stream(image_folder[0], image_ids=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    expected = next(stream.to_tf_dataset(start_step=2).as_numpy_iterator())
    batch = next(iter(stream.distribute(strategy, start_step=2)))
    for key, value in expected.items():
        np.testing.assert_array_equal(batch[key].numpy(), value)
