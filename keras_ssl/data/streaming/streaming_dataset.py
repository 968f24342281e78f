"""`StreamingDataset`: the semi-supervised training stream, from tables.

The streaming counterpart of `semi_supervised()`: the same dict batches
(`"unlabeled"`, `"labeled"` / `"labels"`, `"support"` /
`"support_labels"`, ids and monitoring labels), read from `ImageTable`s
instead of arrays, so neither the unlabeled split nor the labeled subset
is ever held in memory.
"""

from keras_ssl._checks import check_positive_int
from keras_ssl.data.streaming.image_stream import ImageStream
from keras_ssl.data.streaming.image_stream import with_options
from keras_ssl.data.streaming.support_stream import SupportStream


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
