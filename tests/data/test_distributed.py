import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import distribute_dataset
from keras_ssl.data import from_arrays
from keras_ssl.data import semi_supervised
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess


class _FakeStrategy:
    """Just enough of a strategy for the checks made before any input."""

    num_replicas_in_sync = 2

    def distribute_datasets_from_function(self, dataset_fn):
        raise AssertionError("validation should have failed first")


class TestDistributeDataset(TestCase):
    def test_global_batch_not_divisible_raises(self, tiny):
        x, _ = tiny
        dataset = tf.data.Dataset.from_tensor_slices(x)
        with pytest.raises(
            ValueError, match="global_batch_size=5, num_replicas=2"
        ):
            distribute_dataset(_FakeStrategy(), dataset, global_batch_size=5)
        with pytest.raises(ValueError, match="global_batch_size=None"):
            distribute_dataset(_FakeStrategy(), dataset)

    def test_host_batch_sizes_not_divisible_raise(self, tiny):
        x, y = tiny
        with pytest.raises(ValueError, match="batch_size=7, num_replicas=2"):
            distribute_dataset(_FakeStrategy(), from_arrays(x, batch_size=7))
        stream = semi_supervised(
            x, (x, y), unlabeled_batch_size=8, labeled_batch_size=3
        )
        with pytest.raises(ValueError, match="labeled_batch_size=3"):
            distribute_dataset(_FakeStrategy(), stream)

    def test_bad_dataset_raises(self):
        with pytest.raises(ValueError, match="dataset of type"):
            distribute_dataset(_FakeStrategy(), [1, 2, 3])

    @pytest.mark.distributed
    @pytest.mark.slow
    def test_mirrored_strategy_on_two_replicas(self):
        result = run_in_subprocess(
            """
            from keras_ssl.data import SupportSampler
            from keras_ssl.data import distribute_dataset
            from keras_ssl.data import semi_supervised

            strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
            rng = np.random.default_rng(0)
            x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
            y = np.arange(40) % 4
            sampler = SupportSampler(
                x, y, classes_per_batch=2, images_per_class=2)
            stream = semi_supervised(
                x, (x, y), unlabeled_batch_size=8, labeled_batch_size=4,
                support=sampler, seed=3)

            # A host pipeline: replicas get halves of the global batches.
            host_ok = []
            iterator = iter(distribute_dataset(strategy, stream))
            for step in range(2):
                local = strategy.experimental_local_results(next(iterator))
                expected = stream[step]
                host_ok.append(all(
                    np.array_equal(
                        np.concatenate([r[key].numpy() for r in local]),
                        value)
                    and local[0][key].shape[0] == value.shape[0] // 2
                    for key, value in expected.items()))

            # An unbatched tf.data dataset: per-replica batches of 3.
            numbers = tf.data.Dataset.range(12)
            sharded = distribute_dataset(
                strategy, numbers, global_batch_size=6)
            per_replica = [
                [r.numpy().tolist()
                 for r in strategy.experimental_local_results(batch)]
                for batch in sharded]

            # A dataset_fn sees the input context.
            def dataset_fn(context):
                size = context.get_per_replica_batch_size(4)
                return tf.data.Dataset.range(8).batch(size)

            from_fn = [
                [r.numpy().tolist()
                 for r in strategy.experimental_local_results(batch)]
                for batch in distribute_dataset(strategy, dataset_fn)]

            # fit() takes the distributed dict stream.
            class DictModel(keras.Model):
                def __init__(self):
                    super().__init__()
                    self.dense = keras.layers.Dense(2)

                def call(self, batch):
                    images = keras.ops.cast(batch["unlabeled"], "float32")
                    return self.dense(keras.ops.mean(images / 255, (1, 2)))

                def compute_loss(self, x=None, y=None, y_pred=None,
                                 sample_weight=None, training=True):
                    return keras.ops.mean(y_pred ** 2)

            with strategy.scope():
                model = DictModel()
                model.compile("sgd")
            history = model.fit(
                distribute_dataset(strategy, stream), epochs=1,
                steps_per_epoch=len(stream), verbose=0)
            emit(host_ok=host_ok, per_replica=per_replica, from_fn=from_fn,
                 loss=history.history["loss"])
            """,
            # tf.distribute is TensorFlow's, whatever backend the suite runs.
            env={"KERAS_BACKEND": "tensorflow"},
        )
        assert result["host_ok"] == [True, True]
        assert result["per_replica"] == [
            [[0, 1, 2], [3, 4, 5]],
            [[6, 7, 8], [9, 10, 11]],
        ]
        assert result["from_fn"] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
        assert len(result["loss"]) == 1 and np.isfinite(result["loss"][0])
