"""`HostDataset`: the NumPy core shared by the host pipelines.

A `HostDataset` is a `keras.utils.PyDataset` whose batches are a pure
function of `(seed, epoch, index)`. That keeps it deterministic whatever
order Keras asks for the batches in (`fit(shuffle=True)` shuffles batch
indices; `workers > 1` fetches them from several threads), and it lets
`to_tf_dataset(input_context)` cut the very same global batches into
per-replica pieces, so 1 and N replicas see the same data.

It imports TensorFlow only inside `to_tf_dataset()`: the JAX backend
without TensorFlow uses the PyDataset directly.

Notes for `fit()`: a finite dataset moves to its next epoch (a fresh
shuffle) in `on_epoch_end()`, which Keras calls; `fit(shuffle=True)`
additionally permutes the batch order with Python's `random` (seeded by
`keras.utils.set_random_seed`). Under a `tf.distribute` strategy give
`fit()` `distribute_dataset(strategy, ds)` or `ds.to_tf_dataset()`, or
use `repeat=True`, whose batches depend on the index alone.
"""

import itertools
import operator

import keras
import numpy as np


def replica_slots(input_context):
    """`(num_replicas, first_replica, replicas_here)` of one input pipeline.

    With `tf.distribute.Strategy.distribute_datasets_from_function`, each
    input pipeline (one per worker) feeds `num_replicas / num_pipelines`
    replicas, handing consecutive elements of its dataset to them in turn.
    """
    if input_context is None:
        return 1, 0, 1
    replicas = input_context.num_replicas_in_sync
    pipelines = input_context.num_input_pipelines
    per_pipeline = replicas // pipelines
    first = input_context.input_pipeline_id * per_pipeline
    return replicas, first, per_pipeline


def check_divisible(batch_sizes: dict, num_replicas: int):
    """Raises unless every named batch size splits evenly over replicas."""
    for name, size in batch_sizes.items():
        if size % num_replicas:
            raise ValueError(
                f"`{name}` must be divisible by the number of replicas "
                f"({num_replicas}) so every replica gets the same number of "
                f"examples. Received: {name}={size}, "
                f"num_replicas={num_replicas}"
            )


def permutation(seed: int, stream: int, epoch: int, size: int):
    """A permutation of `range(size)` fixed by `(seed, stream, epoch)`."""
    return np.random.default_rng([seed, stream, epoch]).permutation(size)


class HostDataset(keras.utils.PyDataset):
    """Base class of the NumPy host pipelines (see the module docstring).

    Subclasses implement `batch_at(epoch, index)`, returning one global
    batch (an array, a tuple or a dict of NumPy arrays), and
    `batch_sizes()`, the batch sizes that must split over replicas.

    Args:
        steps_per_epoch: int or None. Batches per epoch; `None` for a
            stream without epochs (each index is one independent draw).
        repeat: bool. If `True` the dataset is infinite: index `i` is
            batch `i % steps_per_epoch` of epoch `i // steps_per_epoch`,
            so nothing depends on `on_epoch_end()`. If `False` it has
            `steps_per_epoch` batches and `on_epoch_end()` moves it to the
            next epoch (a fresh shuffle).
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.
    """

    def __init__(self, steps_per_epoch, repeat: bool, **kwargs):
        super().__init__(**kwargs)
        self._steps_per_epoch = steps_per_epoch
        self.repeat = bool(repeat) or steps_per_epoch is None
        self.epoch = 0
        self._permutations = {}

    @property
    def steps_per_epoch(self):
        """Batches in one epoch (`None` for a stream without epochs)."""
        return self._steps_per_epoch

    @property
    def num_batches(self):
        return None if self.repeat else self._steps_per_epoch

    def __len__(self):
        if self._steps_per_epoch is None:
            raise TypeError(f"{type(self).__name__} is an infinite stream.")
        return self._steps_per_epoch

    def __getitem__(self, index):
        index = operator.index(index)
        if index < 0 or (not self.repeat and index >= self._steps_per_epoch):
            raise IndexError(
                f"Batch index {index} out of range for "
                f"{type(self).__name__} with {self.num_batches} batches."
            )
        return self.batch_at(*self._locate(index, self.epoch))

    def on_epoch_end(self):
        if not self.repeat:
            self.epoch += 1

    def _locate(self, index: int, epoch: int):
        if self._steps_per_epoch is None:
            return 0, index
        if self.repeat:
            return divmod(index, self._steps_per_epoch)
        return epoch, index

    def permutation(self, seed: int, stream: int, epoch: int, size: int):
        """`permutation(...)`, caching the last few (batches share one)."""
        key = (seed, stream, epoch, size)
        order = self._permutations.get(key)
        if order is None:
            order = permutation(seed, stream, epoch, size)
            # Threads may race here; the worst case is a recomputation.
            if len(self._permutations) >= 4:
                self._permutations.clear()
            self._permutations[key] = order
        return order

    def global_step(self, epoch: int, index: int) -> int:
        """The position of batch `index` of `epoch` in the whole stream."""
        return epoch * (self._steps_per_epoch or 0) + index

    def batch_at(self, epoch: int, index: int):
        raise NotImplementedError

    def batch_sizes(self) -> dict:
        raise NotImplementedError

    def to_tf_dataset(self, input_context=None):
        """The same batches as a `tf.data.Dataset` (imports TensorFlow).

        Without `input_context` it yields the global batches and can be
        given to `fit()` under any strategy (Keras splits each batch over
        the replicas). With the `tf.distribute.InputContext` that
        `strategy.distribute_datasets_from_function` passes in, it yields
        this input pipeline's per-replica pieces of the same global
        batches, in replica order, so the replicas together see exactly
        the batches of a single-replica run. Each iteration over a finite
        dataset is one epoch: the k-th iteration is epoch k.

        Args:
            input_context: optional `tf.distribute.InputContext`.

        Returns:
            A prefetched `tf.data.Dataset`.
        """
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        replicas, first, here = replica_slots(input_context)
        check_divisible(self.batch_sizes(), replicas)
        signature = self._signature(replicas)
        epochs = itertools.count()

        def generator():
            epoch = next(epochs)
            steps = itertools.count() if self.repeat else range(len(self))
            for step in steps:
                batch = self.batch_at(*self._locate(step, epoch))
                for replica in range(first, first + here):
                    yield keras.tree.map_structure(
                        lambda a: np.array_split(a, replicas)[replica], batch
                    )

        dataset = tf.data.Dataset.from_generator(
            generator, output_signature=signature
        )
        # Tell tf.data (and `fit()`'s progress bar) how long an epoch is.
        cardinality = (
            tf.data.INFINITE_CARDINALITY if self.repeat else len(self) * here
        )
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality(cardinality)
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    def full_batches(self) -> bool:
        """Whether every batch has its full size (a static batch shape)."""
        return True

    def _signature(self, replicas: int):
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        # A short last batch changes the batch dimension, so it is only
        # static when every batch is full.
        full = self.full_batches()

        def spec(array):
            leading = array.shape[0] // replicas if full else None
            return tf.TensorSpec((leading, *array.shape[1:]), array.dtype)

        return keras.tree.map_structure(spec, self.batch_at(0, 0))
