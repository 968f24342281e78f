"""`SupportStream`: PAWS's support batches, streamed from a table.

The streaming counterpart of `keras_ssl.data.SupportSampler`: the same
class-balanced rows at each step, drawn from the table's labels, with the
images read and decoded as `ImageStream` reads them.
"""

import dataclasses

import numpy as np

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
