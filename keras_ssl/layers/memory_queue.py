"""A FIFO memory of embeddings (MoCo's queue, SemPPL's labeled queue)."""

import keras
from keras import ops

from keras_ssl._checks import check_positive_int
from keras_ssl.ops.math import l2_normalize

# Label (and image id) stored in slots that hold no example yet, and the id
# of an image whose id is unknown; no class index or image id equals it, so
# a comparison alone can never match an empty slot.
EMPTY_LABEL = -1
UNKNOWN_ID = -1


@keras.saving.register_keras_serializable(package="keras_ssl")
class MemoryQueue(keras.layers.Layer):
    """A fixed-size FIFO queue of embeddings, optionally with labels.

    SimCLRv2 §2 adds MoCo's memory: "a memory network (with a moving average
    of weights for stabilization) whose output will be buffered as negative
    examples" (64K entries). SemPPL keeps a queue of labeled target
    projections with their labels to find pseudo-labels and semantic
    positives. This layer is that buffer: non-trainable variables `queue`
    `(size, dim)`, `valid` `(size,)` (which slots hold an enqueued
    example), `pointer` (the next slot to write, i.e. the oldest entry once
    full), with `with_labels=True`, `labels` `(size,)` and, with
    `with_ids=True`, `ids` `(size,)`: the id of the image each entry was
    computed from (`-1` where unknown), so that a query can leave the keys
    of its own image out (`keras_ssl.models.SimCLRv2Pretrainer` does).

    Write with `enqueue(values, labels=None, mask=None, ids=None)` and read
    with `read()` (and `read_ids()`). `enqueue` writes the rows in order at
    the pointer with wrap-around, for any `size >= 1` (not necessarily a
    multiple of the batch); a batch larger than the queue keeps only its
    newest `size` rows.
    It uses a scatter with indices computed by modular arithmetic, so it
    has no data-dependent shapes and compiles with XLA.

    Initial contents: the slots start as random unit vectors (what MoCo and
    SemPPL initialise with) with label `-1`, but `valid` starts all `False`.
    Callers decide what empty slots are: `keras_ssl.losses.nt_xent` leaves
    them out of the denominator through `negatives_mask=valid` (cleaner
    than contrasting against random vectors early in training, and a no-op
    once the queue has filled), and SemPPL must never take them as
    positives. Pass `valid` on to keep that guarantee.

    Distribution: the variables have `aggregation="only_first_replica"`.
    Under `MirroredStrategy` every replica must enqueue the *same* globally
    gathered batch (`keras_ssl.distribute.all_gather`), so that each slot
    holds the same example on every replica; the update is then taken from
    the first replica and mirrored. They are saved with the model's weights
    and in `tf.train.Checkpoint`s.

    Args:
        size: int >= 1. Number of slots. Defaults to `65536` (SimCLRv2's
            64K memory).
        dim: int >= 1. Width of the stored embeddings. Defaults to `128`.
        with_labels: bool. Also store an int label per slot. Defaults to
            `False`.
        with_ids: bool. Also store the int id of each entry's source image
            (`-1` when the caller does not know it). Defaults to `False`.
        initializer: `"random_unit"` (normal vectors scaled to unit norm)
            or any Keras initializer for the initial queue contents. Defaults
            to `"random_unit"`.
        seed: optional int. Seed of the `"random_unit"` initial contents.
            Defaults to `None`.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:
    ```python
    memory = keras_ssl.layers.MemoryQueue(size=4096, dim=128)
    z1 = keras.random.normal((8, 128))
    z2 = keras.random.normal((8, 128))
    momentum_z = keras.random.normal((8, 128))
    negatives, valid = memory.read()
    loss = keras_ssl.losses.nt_xent(
        z1, z2, negatives=negatives, negatives_mask=valid
    )
    # After the step: the momentum encoder's projections of this step.
    memory.enqueue(keras_ssl.distribute.all_gather(momentum_z))
    ```

    References:
        - [He et al., 2020. Momentum Contrast for Unsupervised Visual
          Representation Learning](https://arxiv.org/abs/1911.05722)
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
        - [Bošnjak et al., 2023. SemPPL: Predicting Pseudo-Labels for
          Better Contrastive Representations](https://arxiv.org/abs/2301.05158)
    """

    def __init__(
        self,
        size=65536,
        dim=128,
        with_labels=False,
        initializer="random_unit",
        seed=None,
        with_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("size", size)
        check_positive_int("dim", dim)
        self.size = size
        self.dim = dim
        self.with_labels = with_labels
        self.with_ids = with_ids
        self.initializer = initializer
        self.seed = seed
        # The state does not depend on any input shape, so it is created
        # here; this also makes it exist before weights are loaded.
        self.queue = self._state(
            (size, dim), self._queue_initializer(), self.variable_dtype, "queue"
        )
        # Stored as int32: collective ops (e.g. the initial broadcast of
        # MultiWorkerMirroredStrategy) do not accept bool variables.
        self.valid = self._state((size,), "zeros", "int32", "valid")
        self.pointer = self._state((), "zeros", "int32", "pointer")
        self.labels = None
        if with_labels:
            self.labels = self._state(
                (size,),
                keras.initializers.Constant(EMPTY_LABEL),
                "int32",
                "labels",
            )
        self.ids = None
        if with_ids:
            self.ids = self._state(
                (size,), keras.initializers.Constant(UNKNOWN_ID), "int32", "ids"
            )
        self.built = True

    def _state(self, shape, initializer, dtype, name):
        return self.add_weight(
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _queue_initializer(self):
        if self.initializer != "random_unit":
            return keras.initializers.get(self.initializer)
        seed = self.seed

        def random_unit(shape, dtype=None):
            return l2_normalize(
                keras.random.normal(shape, dtype=dtype, seed=seed)
            )

        return random_unit

    def read(self):
        """Returns `(queue, valid)`, or `(queue, valid, labels)`.

        Rows are in slot order, not in time order (the slots from
        `pointer` on, wrapping around, are oldest first once full).
        """
        values = ops.convert_to_tensor(self.queue)
        valid = ops.convert_to_tensor(self.valid) > 0
        if self.with_labels:
            return values, valid, ops.convert_to_tensor(self.labels)
        return values, valid

    def read_ids(self):
        """The source-image id of each slot, `-1` where empty or unknown."""
        if not self.with_ids:
            raise ValueError(
                "`read_ids()` needs a queue built with `with_ids=True`."
            )
        return ops.convert_to_tensor(self.ids)

    def enqueue(self, values, labels=None, mask=None, ids=None):
        """Writes the rows of `values` (and `labels`, `ids`) at the pointer.

        Args:
            values: tensor `(n, dim)`. Rows to store, oldest first.
            labels: int tensor `(n,)`. Required iff `with_labels`.
            mask: optional bool tensor `(n,)`. Only rows where it is `True`
                are written, in order, without gaps (e.g. the labeled rows
                of a mixed batch); the shape stays static.
            ids: int tensor `(n,)`. Source-image ids (`-1`: unknown). With
                `with_ids=True` only; `None` stores `-1`.
        """
        values = ops.convert_to_tensor(values)
        if labels is not None:
            labels = ops.convert_to_tensor(labels)
        if mask is not None:
            mask = ops.convert_to_tensor(mask)
        if ids is not None:
            ids = ops.convert_to_tensor(ids)
        self._check_enqueue(values, labels, mask, ids)
        n = ops.shape(values)[0]
        if mask is None:
            write = ops.ones((n,), dtype="int32")
        else:
            write = ops.cast(mask, "int32")
        # Rank of each written row among the written rows, and their count.
        rank = ops.cumsum(write) - 1
        count = ops.sum(write)
        pointer = ops.convert_to_tensor(self.pointer)
        # Of more than `size` written rows only the newest `size` survive;
        # the rest (and the masked rows) go to an extra scratch slot that is
        # cut off afterwards, so no two kept rows ever share an index.
        kept = ops.logical_and(write > 0, rank >= count - self.size)
        slots = ops.mod(pointer + rank, self.size)
        index = ops.where(kept, slots, self.size)[:, None]

        def scatter(variable, updates):
            current = ops.convert_to_tensor(variable)
            scratch = ops.zeros((1,) + tuple(current.shape[1:]), current.dtype)
            padded = ops.concatenate([current, scratch], axis=0)
            updates = ops.cast(updates, current.dtype)
            variable.assign(ops.scatter_update(padded, index, updates)[:-1])

        scatter(self.queue, values)
        scatter(self.valid, ops.ones((n,), dtype="int32"))
        if self.with_labels:
            scatter(self.labels, labels)
        if self.with_ids:
            if ids is None:
                ids = ops.full((n,), UNKNOWN_ID, dtype="int32")
            scatter(self.ids, ids)
        self.pointer.assign(ops.mod(pointer + count, self.size))

    def _check_enqueue(self, values, labels, mask, ids):
        if len(values.shape) != 2 or values.shape[-1] not in (None, self.dim):
            raise ValueError(
                "`values` must have shape (batch, dim) with the queue's dim. "
                f"Received: values dim={values.shape[-1]} (values.shape="
                f"{tuple(values.shape)}), queue dim={self.dim}"
            )
        if self.with_labels and labels is None:
            raise ValueError(
                "This queue has `with_labels=True`: `enqueue` needs `labels`."
            )
        if not self.with_labels and labels is not None:
            raise ValueError(
                "`labels` given to a queue built with `with_labels=False`."
            )
        if not self.with_ids and ids is not None:
            raise ValueError(
                "`ids` given to a queue built with `with_ids=False`."
            )
        for name, x in (("labels", labels), ("mask", mask), ("ids", ids)):
            if x is None:
                continue
            shape = tuple(x.shape)
            if len(shape) != 1 or (
                shape[0] is not None
                and values.shape[0] is not None
                and shape[0] != values.shape[0]
            ):
                raise ValueError(
                    f"`{name}` must have shape (batch,) matching `values`. "
                    f"Received: {name}.shape={tuple(shape)}, "
                    f"values.shape={tuple(values.shape)}"
                )

    def get_config(self):
        config = super().get_config()
        initializer = self.initializer
        if not isinstance(initializer, str):
            initializer = keras.initializers.serialize(initializer)
        config.update(
            {
                "size": self.size,
                "dim": self.dim,
                "with_labels": self.with_labels,
                "with_ids": self.with_ids,
                "initializer": initializer,
                "seed": self.seed,
            }
        )
        return config
