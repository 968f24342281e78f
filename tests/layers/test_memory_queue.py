import collections
import os
import tempfile

import keras
import numpy as np
import pytest

from keras_ssl.layers.memory_queue import EMPTY_LABEL
from keras_ssl.layers.memory_queue import MemoryQueue
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess

BACKEND = keras.backend.backend()

# (size, batch sizes enqueued in turn): sizes that are not multiples of the
# batch, a queue of one slot, and batches larger than the queue.
SCHEDULES = [
    (5, [2, 3, 2, 3, 2]),
    (1, [2, 1, 3]),
    (3, [7, 2, 4]),
    (4, [2, 2, 2]),
]


def batches(sizes, dim, seed=0):
    """Distinct rows (row k of the stream starts with k) and labels."""
    rng = np.random.default_rng(seed)
    start = 0
    for n in sizes:
        rows = rng.normal(size=(n, dim)).astype("float32")
        rows[:, 0] = np.arange(start, start + n)
        yield rows, (np.arange(start, start + n) % 7).astype("int32")
        start += n


def fifo_reference(size, stream, masks=None):
    """What a `deque(maxlen=size)` holds after appending the stream."""
    rows = collections.deque(maxlen=size)
    labels = collections.deque(maxlen=size)
    for i, (values, batch_labels) in enumerate(stream):
        for j in range(len(values)):
            if masks is None or masks[i][j]:
                rows.append(values[j])
                labels.append(batch_labels[j])
    return list(rows), list(labels)


def state(queue):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in queue.read()]


class TestMemoryQueue(TestCase):
    def check_fifo(self, queue, initial, rows, labels, total):
        values, valid, stored_labels = state(queue)
        size = queue.size
        count = min(total, size)
        pointer = int(keras.ops.convert_to_numpy(queue.pointer))
        assert pointer == total % size
        # Oldest first: the `count` slots ending just before the pointer.
        slots = [(pointer - count + k) % size for k in range(count)]
        assert len(rows) == count
        self.assertAllClose(values[slots], np.array(rows).reshape(count, -1))
        np.testing.assert_array_equal(stored_labels[slots], labels)
        np.testing.assert_array_equal(valid, np.isin(np.arange(size), slots))
        # Slots never written keep their initial contents and no label.
        empty = ~valid
        self.assertAllClose(values[empty], initial[empty])
        assert np.all(stored_labels[empty] == EMPTY_LABEL)

    @pytest.mark.parametrize("size,sizes", SCHEDULES)
    def test_fifo_matches_deque(self, size, sizes):
        queue = MemoryQueue(size=size, dim=3, with_labels=True, seed=1)
        initial = state(queue)[0]
        stream = list(batches(sizes, 3))
        for i, (values, labels) in enumerate(stream):
            queue.enqueue(values, labels=labels)
            rows, row_labels = fifo_reference(size, stream[: i + 1])
            total = sum(sizes[: i + 1])
            self.check_fifo(queue, initial, rows, row_labels, total)

    def test_without_labels(self):
        queue = MemoryQueue(size=5, dim=4)
        assert queue.labels is None
        stream = list(batches([3, 4], 4))
        for values, _ in stream:
            queue.enqueue(values)
        values, valid = state(queue)
        rows, _ = fifo_reference(5, stream)
        pointer = int(keras.ops.convert_to_numpy(queue.pointer))
        assert pointer == 2
        self.assertAllClose(values[[(2 + k) % 5 for k in range(5)]], rows)
        assert valid.all()

    def test_mask_writes_selected_rows_without_gaps(self):
        queue = MemoryQueue(size=5, dim=2, with_labels=True)
        initial = state(queue)[0]
        stream = list(batches([4, 4, 3], 2))
        masks = [
            np.array([True, False, True, False]),
            np.array([False, False, False, False]),
            np.array([True, True, False]),
        ]
        total = 0
        for i, ((values, labels), mask) in enumerate(zip(stream, masks)):
            queue.enqueue(values, labels=labels, mask=mask)
            total += int(mask.sum())
            rows, row_labels = fifo_reference(
                5, stream[: i + 1], masks[: i + 1]
            )
            self.check_fifo(queue, initial, rows, row_labels, total)

    def test_mask_with_more_rows_than_slots(self):
        queue = MemoryQueue(size=2, dim=2, with_labels=True)
        initial = state(queue)[0]
        stream = list(batches([5], 2))
        mask = [np.array([True, True, False, True, False])]
        queue.enqueue(stream[0][0], labels=stream[0][1], mask=mask[0])
        rows, labels = fifo_reference(2, stream, mask)
        self.check_fifo(queue, initial, rows, labels, 3)

    def test_ids_follow_their_rows(self):
        queue = MemoryQueue(size=5, dim=2, with_ids=True)
        assert np.all(keras.ops.convert_to_numpy(queue.read_ids()) == -1)
        stream = list(batches([4, 3], 2))
        ids = [np.array([10, 11, 12, 13]), np.array([20, 21, 22])]
        mask = [None, np.array([True, False, True])]
        for (values, _), row_ids, row_mask in zip(stream, ids, mask):
            queue.enqueue(values, ids=row_ids, mask=row_mask)
        values = keras.ops.convert_to_numpy(queue.read()[0])
        stored = keras.ops.convert_to_numpy(queue.read_ids())
        # Oldest first from the pointer: 11, 12, 13, 20, 22 (10 dropped).
        pointer = int(keras.ops.convert_to_numpy(queue.pointer))
        order = [(pointer + k) % 5 for k in range(5)]
        np.testing.assert_array_equal(stored[order], [11, 12, 13, 20, 22])
        expected = np.concatenate([stream[0][0][1:], stream[1][0][[0, 2]]])
        self.assertAllClose(values[order], expected)
        # Rows written without ids are unknown (-1), not a stale id.
        queue.enqueue(stream[1][0][:1])
        assert keras.ops.convert_to_numpy(queue.read_ids())[pointer] == -1
        with pytest.raises(ValueError, match="with_ids=False"):
            MemoryQueue(size=2, dim=2).enqueue(np.ones((1, 2)), ids=[0])
        with pytest.raises(ValueError, match="with_ids=True"):
            MemoryQueue(size=2, dim=2).read_ids()
        with pytest.raises(ValueError, match="ids.shape"):
            queue.enqueue(np.ones((2, 2)), ids=np.array([1, 2, 3]))
        assert queue.get_config()["with_ids"] is True

    def test_initial_state(self):
        queue = MemoryQueue(size=6, dim=4, with_labels=True, seed=3)
        values, valid, labels = state(queue)
        self.assertAllClose(np.linalg.norm(values, axis=1), np.ones(6))
        assert values.std() > 0.1  # random, not a constant
        assert not valid.any()
        assert np.all(labels == EMPTY_LABEL)
        assert int(keras.ops.convert_to_numpy(queue.pointer)) == 0
        zeros = MemoryQueue(size=2, dim=3, initializer="zeros")
        self.assertAllClose(state(zeros)[0], np.zeros((2, 3)))

    def test_variables(self):
        queue = MemoryQueue(size=4, dim=3, with_labels=True)
        assert queue.trainable_weights == []
        assert len(queue.non_trainable_weights) == 4
        dtypes = {v.path.split("/")[-1]: v.dtype for v in queue.weights}
        assert dtypes == {
            "queue": "float32",
            "valid": "int32",
            "pointer": "int32",
            "labels": "int32",
        }
        for variable in queue.weights:
            assert variable.aggregation == "only_first_replica"
            assert not variable.trainable

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            ({"size": 0, "dim": 2}, "size=0"),
            ({"size": 2.5, "dim": 2}, "size=2.5"),
            ({"size": True, "dim": 2}, "size=True"),
            ({"size": 3, "dim": 0}, "dim=0"),
            ({"size": 3, "dim": -1}, "dim=-1"),
        ],
    )
    def test_rejects_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            MemoryQueue(**kwargs)

    def test_rejects_bad_enqueue(self):
        queue = MemoryQueue(size=3, dim=4, with_labels=True)
        values = np.zeros((2, 4), "float32")
        with pytest.raises(ValueError, match="values dim=5.*queue dim=4"):
            queue.enqueue(np.zeros((2, 5), "float32"), labels=[0, 1])
        with pytest.raises(ValueError, match="needs `labels`"):
            queue.enqueue(values)
        with pytest.raises(ValueError, match="labels"):
            queue.enqueue(values, labels=[0, 1, 2])
        with pytest.raises(ValueError, match="mask"):
            queue.enqueue(values, labels=[0, 1], mask=[True])
        with pytest.raises(ValueError, match="with_labels=False"):
            MemoryQueue(size=3, dim=4).enqueue(values, labels=[0, 1])

    def test_config_round_trip(self):
        queue = MemoryQueue(size=7, dim=5, with_labels=True, seed=2)
        rebuilt = self.run_config_round_trip(queue)
        assert (rebuilt.size, rebuilt.dim, rebuilt.with_labels) == (7, 5, True)
        custom = MemoryQueue(
            size=2, dim=3, initializer=keras.initializers.Constant(0.5)
        )
        rebuilt = self.run_config_round_trip(custom)
        self.assertAllClose(state(rebuilt)[0], np.full((2, 3), 0.5))

    def test_keras_save_and_load_keep_contents(self):
        model = _ModelWithQueue(size=5, dim=3)
        x = np.ones((2, 4), "float32")
        model(x)
        for values, labels in batches([2, 4], 3):
            model.memory.enqueue(values, labels=labels)
        expected = state(model.memory)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        actual = state(reloaded.memory)
        for e, a in zip(expected, actual):
            np.testing.assert_array_equal(a, e)
        assert int(keras.ops.convert_to_numpy(reloaded.memory.pointer)) == 1
        self.assertAllClose(reloaded(x), model(x))

    @pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.train.Checkpoint")
    def test_tf_checkpoint_round_trip(self):
        import tensorflow as tf

        queue = MemoryQueue(size=4, dim=2, with_labels=True, seed=5)
        for values, labels in batches([3, 2], 2):
            queue.enqueue(values, labels=labels)
        expected = state(queue)
        with tempfile.TemporaryDirectory() as tmp:
            path = tf.train.Checkpoint(memory=queue).save(
                os.path.join(tmp, "ckpt")
            )
            fresh = MemoryQueue(size=4, dim=2, with_labels=True, seed=6)
            assert not np.allclose(state(fresh)[0], expected[0])
            tf.train.Checkpoint(memory=fresh).restore(path).assert_consumed()
        for e, a in zip(expected, state(fresh)):
            np.testing.assert_array_equal(a, e)
        assert int(fresh.pointer.numpy()) == 1


class TestMemoryQueueCompiled(TestCase):
    @pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function")
    @pytest.mark.parametrize("jit_compile", [True, False])
    def test_tf_function(self, jit_compile):
        import tensorflow as tf

        eager = MemoryQueue(size=5, dim=3, with_labels=True, seed=0)
        compiled = MemoryQueue(size=5, dim=3, with_labels=True, seed=0)
        # An unknown batch dim, as in `fit()` without `drop_remainder`.
        spec = [
            tf.TensorSpec((None, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.bool),
        ]

        @tf.function(jit_compile=jit_compile, input_signature=spec)
        def step(values, labels, mask):
            compiled.enqueue(values, labels=labels, mask=mask)

        rng = np.random.default_rng(0)
        for values, labels in batches([2, 3, 7, 2], 3):
            mask = rng.random(len(values)) < 0.7
            eager.enqueue(values, labels=labels, mask=mask)
            step(values, labels, mask)
        for e, a in zip(state(eager), state(compiled)):
            np.testing.assert_array_equal(a, e)
        assert int(compiled.pointer.numpy()) == int(eager.pointer.numpy())

    @pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
    def test_jax_jit(self):
        self._check_jax_jit()

    @pytest.mark.slow
    @pytest.mark.skipif(BACKEND == "jax", reason="runs in-process on JAX")
    def test_jax_jit_in_subprocess(self):
        pytest.importorskip("jax")
        result = run_in_subprocess(
            _JAX,
            num_devices=1,
            backend="jax",
            env={"JAX_PLATFORMS": "cpu"},
        )
        assert result == {"backend": "jax", "ok": True}

    def _check_jax_jit(self):
        import jax

        queue = MemoryQueue(size=5, dim=3, with_labels=True, seed=0)
        initial = state(queue)[0]
        variables = queue.non_trainable_variables

        @jax.jit
        def step(values, labels, current):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, current))
            ) as scope:
                queue.enqueue(values, labels=labels)
            return [scope.get_current_value(v) for v in variables]

        stream = list(batches([2, 3, 2, 7], 3))
        for values, labels in stream:
            current = [v.value for v in variables]
            for variable, value in zip(
                variables, step(values, labels, current)
            ):
                variable.assign(value)
        rows, labels = fifo_reference(5, stream)
        TestMemoryQueue().check_fifo(queue, initial, rows, labels, 14)


_JAX = """
import sys
sys.path.insert(0, {tests!r})
from test_memory_queue import TestMemoryQueueCompiled

TestMemoryQueueCompiled()._check_jax_jit()
emit(backend=keras.backend.backend(), ok=True)
""".format(tests=os.path.dirname(os.path.abspath(__file__)))


@keras.saving.register_keras_serializable(package="keras_ssl_tests")
class _ModelWithQueue(keras.Model):
    def __init__(self, size, dim, **kwargs):
        super().__init__(**kwargs)
        self.size, self.dim = size, dim
        self.dense = keras.layers.Dense(dim)
        self.memory = MemoryQueue(size=size, dim=dim, with_labels=True)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "dim": self.dim})
        return config


_DISTRIBUTED = """
from keras_ssl import distribute
from keras_ssl.layers import MemoryQueue

stream = {stream}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    queue = MemoryQueue(size={size}, dim={dim}, with_labels=True, seed=0)
    # Fed each replica's own rows (a misuse) to show whose update wins.
    local_queue = MemoryQueue(size={size}, dim={dim}, seed=0)


def replica_step(values, labels, mask):
    # Every replica enqueues the same globally gathered batch.
    queue.enqueue(
        distribute.all_gather(values),
        labels=distribute.all_gather(labels),
        # all_gather sums slots across replicas, which bool cannot do.
        mask=distribute.all_gather(tf.cast(mask, tf.int32)) > 0,
    )
    local_queue.enqueue(values)


@tf.function
def step(values, labels, mask):
    strategy.run(replica_step, args=(values, labels, mask))


def shard(array, dtype):
    local = len(array) // 2
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            np.asarray(array)[ctx.replica_id_in_sync_group * local:][:local],
            dtype,
        )
    )


for values, labels, mask in stream:
    step(
        shard(values, tf.float32), shard(labels, tf.int32),
        shard(mask, tf.bool),
    )
copies = {{
    name: [
        np.asarray(c).tolist()
        for c in strategy.experimental_local_results(v.value)
    ]
    for name, v in (
        ("queue", queue.queue), ("valid", queue.valid),
        ("labels", queue.labels), ("pointer", queue.pointer),
    )
}}
local_copies = [
    np.asarray(c).tolist()
    for c in strategy.experimental_local_results(local_queue.queue.value)
]
emit(
    replicas=strategy.num_replicas_in_sync,
    copies=copies,
    local_copies=local_copies,
)
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute test")
class TestMemoryQueueDistributed(TestCase):
    def test_two_replicas_match_one(self):
        size, dim = 5, 3
        rng = np.random.default_rng(4)
        stream = []
        for values, labels in batches([4, 4, 6, 4], dim):
            mask = rng.random(len(values)) < 0.8
            stream.append((values.tolist(), labels.tolist(), mask.tolist()))
        result = run_in_subprocess(
            _DISTRIBUTED.format(stream=stream, size=size, dim=dim)
        )
        assert result["replicas"] == 2

        single = MemoryQueue(size=size, dim=dim, with_labels=True, seed=0)
        for values, labels, mask in stream:
            single.enqueue(
                np.array(values, "float32"),
                labels=np.array(labels, "int32"),
                mask=np.array(mask),
            )
        values, valid, labels = state(single)
        pointer = int(keras.ops.convert_to_numpy(single.pointer))
        assert valid.all()  # the queue wrapped around at least once
        expected = {
            "queue": values,
            "valid": valid,
            "labels": labels,
            "pointer": pointer,
        }
        for name, copies in result["copies"].items():
            assert len(copies) == 2
            for copy in copies:
                if name == "queue":
                    self.assertAllClose(copy, expected[name])
                else:
                    np.testing.assert_array_equal(copy, expected[name])

        # With different rows per replica the first replica's update is
        # the one applied, on every copy ("only_first_replica").
        first_only = MemoryQueue(size=size, dim=dim, seed=0)
        for values, _, _ in stream:
            first_only.enqueue(np.array(values, "float32")[: len(values) // 2])
        for copy in result["local_copies"]:
            self.assertAllClose(copy, state(first_only)[0])
