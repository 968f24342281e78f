import numpy as np
import pytest

from keras_ssl import distribute
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess


class TestDistribute(TestCase):
    def test_identity_outside_strategy(self):
        x = np.arange(6.0).reshape(3, 2)
        self.assertAllClose(distribute.all_gather(x), x)
        self.assertAllClose(distribute.all_reduce_sum(x), x)
        assert distribute.num_replicas() == 1
        assert distribute.replica_id() == 0
        assert not distribute.in_multi_worker_mode()

    @pytest.mark.distributed
    def test_all_gather_values_and_gradients_on_two_replicas(self):
        result = run_in_subprocess(
            """
            from keras_ssl import distribute

            strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
            x = np.arange(8, dtype="float32").reshape(4, 2)
            weights = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0],
                                [-1.0, 0.0]], "float32")

            def loss_fn(local_x, local_id):
                gathered = distribute.all_gather(local_x)
                # Each replica's loss uses every replica's rows, weighted
                # differently per replica so a wrong gradient scale shows.
                scale = tf.cast(local_id + 1, tf.float32)
                return scale * tf.reduce_sum(gathered * weights), gathered

            def step(local_x):
                rid = tf.distribute.get_replica_context()
                rid = rid.replica_id_in_sync_group
                with tf.GradientTape() as tape:
                    tape.watch(local_x)
                    loss, gathered = loss_fn(local_x, rid)
                grad = tape.gradient(loss, local_x)
                return gathered, grad, distribute.replica_id(), tf.constant(
                    distribute.num_replicas())

            def value_fn(ctx):
                start = ctx.replica_id_in_sync_group * 2
                return tf.constant(x[start : start + 2])

            batch = strategy.experimental_distribute_values_from_function(
                value_fn
            )
            gathered, grad, ids, counts = strategy.run(step, args=(batch,))
            emit(
                gathered=[g.numpy() for g in
                          strategy.experimental_local_results(gathered)],
                grad=np.concatenate([g.numpy() for g in
                          strategy.experimental_local_results(grad)]),
                ids=[int(i) for i in
                     strategy.experimental_local_results(ids)],
                counts=[int(c) for c in
                        strategy.experimental_local_results(counts)],
            )
            """
        )
        x = np.arange(8, dtype="float32").reshape(4, 2)
        weights = np.array(
            [[1.0, -2.0], [0.5, 3.0], [2.0, 1.0], [-1.0, 0.0]], "float32"
        )
        for gathered in result["gathered"]:
            self.assertAllClose(gathered, x)
        assert result["ids"] == [0, 1]
        assert result["counts"] == [2, 2]
        # Global loss = (1 + 2) * sum(x * w): every row's gradient is 3 * w.
        self.assertAllClose(result["grad"], 3.0 * weights)
