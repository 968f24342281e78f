"""`StreamingDataset`: the semi-supervised training stream, from tables.

The streaming counterpart of `semi_supervised()`: the same dict batches
(`"unlabeled"`, `"labeled"` / `"labels"`, `"support"` /
`"support_labels"`, ids and monitoring labels), read from `ImageTable`s
instead of arrays, so neither the unlabeled split nor the labeled subset
is ever held in memory.
"""

import dataclasses

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import check_seed
from keras_ssl.data.streaming.image_stream import ImageStream
from keras_ssl.data.streaming.image_stream import pipeline_of
from keras_ssl.data.streaming.image_stream import with_options
from keras_ssl.data.support_sampler import SupportSampler


@dataclasses.dataclass(eq=False)
class SupportStream:
    """PAWS's class-balanced support batches, read from a table.

    Batch `step` holds the rows `keras_ssl.data.SupportSampler` would
    draw at that step from the same labels and seed: `classes_per_batch`
    distinct classes, `images_per_class` distinct images of each, a new
    draw every step. Only the table's labels are held.

    Args:
        table: `ImageTable` with labels (see `read_labels`).
        classes_per_batch: int.
        images_per_class: int.
        image_size: int or `(height, width)`.
        crop: str. See `ImageStream`. Defaults to `"full"`.
        replacement: bool. Defaults to `False`.
        seed: int. Defaults to `0`.
    """

    table: object
    classes_per_batch: int
    images_per_class: int
    image_size: object
    crop: str = "full"
    replacement: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.table.labels is None:
            raise ValueError(
                "`table` must carry labels for class-balanced batches; read "
                "them with `keras_ssl.data.streaming.read_labels(table)`."
            )
        # The sampler checks the counts and holds the class members; a
        # one-pixel stand-in replaces the images it never reads here.
        self.sampler = SupportSampler(
            np.zeros((len(self.table), 1, 1, 3), np.uint8),
            self.table.labels,
            classes_per_batch=self.classes_per_batch,
            images_per_class=self.images_per_class,
            replacement=self.replacement,
            num_classes=self.table.num_classes,
            seed=check_seed(self.seed),
        )
        self.images = ImageStream(
            self.table,
            self.sampler.batch_size,
            self.image_size,
            crop=self.crop,
            seed=self.seed,
            salt=2,
            shuffle=False,
            # Only its decoding is used: with `replacement` a batch may
            # hold more rows than the table.
            repeat=False,
        )

    def to_tf_dataset(self, input_context=None, start_step: int = 0):
        """Per-replica `(images, labels)` support batches from
        `start_step`, this input pipeline's share of each."""
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        chunk, per_replica = self.images.per_pipeline(input_context)
        pipeline = pipeline_of(input_context)
        size = self.sampler.batch_size

        def rows(step):
            found = tf.numpy_function(
                lambda s: self.sampler.indices(int(s)).astype(np.int64),
                [step],
                tf.int64,
                stateful=False,
            )
            found = tf.ensure_shape(found, (size,))
            share = found[pipeline * chunk : (pipeline + 1) * chunk]
            first = step * size + pipeline * chunk
            positions = first + tf.range(chunk, dtype=tf.int64)
            return tf.data.Dataset.from_tensor_slices((share, positions))

        steps = tf.data.Dataset.range(
            check_seed(start_step, "start_step"), np.iinfo(np.int64).max
        )
        examples = self.images.examples(steps.flat_map(rows))
        batches = examples.map(lambda image, label, _: (image, label))
        return with_options(batches.batch(per_replica, drop_remainder=True))


class StreamingDataset:
    """Dict batches of streamed unlabeled, labeled and support images.

    Each batch is a dict with the keys `semi_supervised()` yields:
    `"unlabeled"` (uint8), with `image_ids` `"unlabeled_ids"` (int32),
    with `monitor_labels` `"unlabeled_labels"` (int32, monitoring only);
    with a labeled stream `"labeled"` and `"labels"` (and `"labeled_ids"`
    with `image_ids`: the labeled image's row in the unlabeled table, or
    `-1`); with a support stream `"support"` and `"support_labels"`.

    Step `s` of every part is a function of `s` alone, so
    `to_tf_dataset(start_step=s)` resumes exactly, reading nothing that
    it leaves out. `num_batches` is `None` (the stream is infinite) and
    `steps_per_epoch` is one pass over the unlabeled images.

    Args:
        unlabeled: `ImageStream` of the unlabeled images.
        labeled: optional `ImageStream` of the labeled images.
        support: optional `SupportStream`.
        image_ids: bool. Yield the images' ids. Defaults to `False`.
        monitor_labels: bool. Yield the unlabeled images' true labels.
            Defaults to `False`.
    """

    num_batches = None

    def __init__(
        self,
        unlabeled,
        labeled=None,
        support=None,
        image_ids: bool = False,
        monitor_labels: bool = False,
    ):
        for name, part, kind in (
            ("unlabeled", unlabeled, ImageStream),
            ("labeled", labeled, ImageStream),
            ("support", support, SupportStream),
        ):
            if (part is not None or name == "unlabeled") and not isinstance(
                part, kind
            ):
                raise ValueError(
                    f"`{name}` must be a keras_ssl.data.streaming."
                    f"{kind.__name__}. Received: {name} of type {type(part)}"
                )
        self.unlabeled = unlabeled
        self.labeled = labeled
        self.support = support
        self.image_ids = bool(image_ids)
        self.monitor_labels = bool(monitor_labels)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.unlabeled)

    def batch_sizes(self):
        sizes = {"unlabeled_batch_size": self.unlabeled.batch_size}
        if self.labeled is not None:
            sizes["labeled_batch_size"] = self.labeled.batch_size
        if self.support is not None:
            sizes["support batch"] = self.support.sampler.batch_size
        return sizes

    def to_tf_dataset(self, input_context=None, start_step: int = 0):
        """Per-replica dict batches from global step `start_step`.

        Args:
            input_context: optional `tf.distribute.InputContext`.
            start_step: int. Global steps to leave out (exact resume).

        Returns:
            A prefetched `tf.data.Dataset` of dicts.
        """
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        parts = [self.unlabeled.to_tf_dataset(input_context, start_step)]
        for part in (self.labeled, self.support):
            if part is not None:
                parts.append(part.to_tf_dataset(input_context, start_step))
        zipped = tf.data.Dataset.zip(tuple(parts))
        return with_options(zipped.map(self._to_dict))

    def _to_dict(self, *parts):
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        images, labels, ids = parts[0]
        batch = {"unlabeled": images}
        if self.image_ids:
            batch["unlabeled_ids"] = tf.cast(ids, tf.int32)
        if self.monitor_labels:
            batch["unlabeled_labels"] = labels
        rest = list(parts[1:])
        if self.labeled is not None:
            batch["labeled"], batch["labels"], ids = rest.pop(0)
            if self.image_ids:
                batch["labeled_ids"] = tf.cast(ids, tf.int32)
        if self.support is not None:
            batch["support"], batch["support_labels"] = rest.pop(0)
        return batch

    def distribute(self, strategy, start_step: int = 0):
        """The stream as `strategy.distribute_datasets_from_function`
        builds it: each input pipeline reads only its share."""
        for name, size in self.batch_sizes().items():
            check_positive_int(name, size)
        return strategy.distribute_datasets_from_function(
            lambda context: self.to_tf_dataset(context, start_step)
        )
