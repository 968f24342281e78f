"""The tf.data path of `semi_supervised()` (imports TensorFlow).

`semi_supervised()` takes it when any source is a `tf.data.Dataset`:
unbatched elements are checked, shuffled with a buffer, batched and zipped
into the same dict batches as `SemiSupervisedDataset`'s.
"""

import itertools

import tensorflow as tf

from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images
from keras_ssl.data._checks import check_labeled_ids
from keras_ssl.data._checks import is_tf_dataset
from keras_ssl.data._tf_elements import element_parts
from keras_ssl.data._tf_elements import map_elements


def semi_supervised_tf(
    unlabeled,
    labeled,
    *,
    unlabeled_labels,
    monitor_labels,
    image_ids,
    labeled_ids,
    unlabeled_batch_size,
    labeled_batch_size,
    support,
    shuffle,
    seed,
    repeat,
    num_classes,
    buffer,
    keys,
):
    """The prefetched stream of dict batches, from checked options.

    `keys` is `(image_key, label_key)` and `buffer` the shuffle buffer's
    size; the other arguments are `semi_supervised()`'s, checked.
    """
    unlabeled = _unlabeled_tf(
        unlabeled,
        unlabeled_labels,
        monitor_labels,
        image_ids,
        num_classes=num_classes,
        keys=keys,
    )
    if shuffle:
        unlabeled = unlabeled.shuffle(buffer, seed=seed)
    if repeat:
        unlabeled = unlabeled.repeat()
    parts = [unlabeled.batch(unlabeled_batch_size, drop_remainder=True)]
    steps_per_pass = int(parts[0].cardinality())
    if labeled is not None:
        parts.append(
            _labeled_tf(
                labeled,
                labeled_ids if image_ids else False,
                labeled_batch_size,
                shuffle=shuffle,
                seed=seed,
                num_classes=num_classes,
                buffer=buffer,
                keys=keys,
            )
        )
    if support is not None:
        parts.append(_support_dataset(support, steps_per_pass))

    to_dict = _to_dict(image_ids, monitor_labels, labeled is not None, support)
    stream = tf.data.Dataset.zip(tuple(parts)).map(to_dict)
    return stream.prefetch(tf.data.AUTOTUNE)


def _unlabeled_tf(
    unlabeled, unlabeled_labels, monitor_labels, image_ids, *, num_classes, keys
):
    """The unbatched unlabeled elements of the tf.data path: the image, or
    `(image, label)` with `monitor_labels`, then paired with its id when
    `image_ids`."""
    if not is_tf_dataset(unlabeled):
        slices = as_uint8_images(unlabeled, "unlabeled")
        if monitor_labels:
            labels = as_int32_labels(
                unlabeled_labels, len(slices), num_classes, "unlabeled_labels"
            )
            slices = (slices, labels)
        unlabeled = tf.data.Dataset.from_tensor_slices(slices)
    unlabeled = map_elements(
        unlabeled,
        element_parts(unlabeled, "unlabeled", monitor_labels, *keys),
    )
    if monitor_labels and num_classes is not None:
        unlabeled = unlabeled.map(_label_range_check(num_classes))
    if image_ids:
        # The position in the source, fixed before any shuffling.
        unlabeled = unlabeled.enumerate().map(
            lambda index, element: (element, tf.cast(index, tf.int32))
        )
    return unlabeled


def _to_dict(image_ids, monitor_labels, with_labeled, support):
    """Maps the zipped batches of the tf.data path to the stream's dicts."""

    def to_dict(*batches):
        first = batches[0]
        batch = {}
        if image_ids:
            first, batch["unlabeled_ids"] = first
        if monitor_labels:
            batch["unlabeled"], batch["unlabeled_labels"] = first
        else:
            batch["unlabeled"] = first
        rest = list(batches[1:])
        if with_labeled:
            if image_ids:
                batch["labeled"], batch["labels"], batch["labeled_ids"] = (
                    rest.pop(0)
                )
            else:
                batch["labeled"], batch["labels"] = rest.pop(0)
        if support is not None:
            batch.update(rest.pop(0))
        return batch

    return to_dict


def _labeled_tf(
    labeled,
    labeled_ids,
    batch_size,
    *,
    shuffle,
    seed,
    num_classes,
    buffer,
    keys,
):
    """The repeated labeled batches of the tf.data path.

    `labeled_ids=False` yields `(image, label)`; otherwise each element
    also carries its id (`None`: -1 for all).
    """
    if not is_tf_dataset(labeled):
        images = as_uint8_images(labeled[0], "labeled")
        labels = as_int32_labels(labeled[1], len(images), num_classes, "labels")
        labeled = tf.data.Dataset.from_tensor_slices((images, labels))
    labeled = map_elements(
        labeled, element_parts(labeled, "labeled", True, *keys)
    )
    if num_classes is not None:
        labeled = labeled.map(_label_range_check(num_classes))
    if labeled_ids is not False:
        labeled = _with_labeled_ids(labeled, labeled_ids)
    if shuffle:
        labeled = labeled.shuffle(buffer, seed=seed + 1)
    return labeled.repeat().batch(batch_size, drop_remainder=True)


def _with_labeled_ids(labeled, labeled_ids):
    """`(image, label, id)` elements: `labeled_ids` in order, else -1."""
    if labeled_ids is None:
        return labeled.map(lambda image, label: (image, label, tf.constant(-1)))
    count = int(labeled.cardinality())
    ids = check_labeled_ids(
        labeled_ids, True, count if count >= 0 else len(labeled_ids)
    )
    pairs = tf.data.Dataset.zip(
        (labeled, tf.data.Dataset.from_tensor_slices(ids))
    )
    return pairs.map(lambda pair, index: (*pair, index))


def _label_range_check(num_classes):
    def check(image, label):
        # Labels of a tf.data source are only seen while it runs.
        message = f"labels must lie in [0, num_classes={num_classes})"
        with tf.control_dependencies(
            [
                tf.debugging.assert_non_negative(label, message=message),
                tf.debugging.assert_less(label, num_classes, message=message),
            ]
        ):
            return image, tf.identity(label)

    return check


def _support_dataset(support, steps_per_pass):
    """Support batches as tf.data, batch `g` of the stream getting step `g`.

    The step is the stream position, not a count of the batches pulled,
    because prefetching pulls a varying number past the end of a pass.
    Pass `k` starts at `k * steps_per_pass` (or at `k * 2**31` when the
    length of a pass is unknown: still deterministic, never repeated).
    """
    signature = {
        key: tf.TensorSpec(value.shape, value.dtype)
        for key, value in support.features(0).items()
    }
    if steps_per_pass is None or steps_per_pass < 0:
        steps_per_pass = 2**31
    passes = itertools.count()

    def generator():
        start = next(passes) * steps_per_pass
        for step in itertools.count(start):
            yield support.features(step)

    dataset = tf.data.Dataset.from_generator(
        generator, output_signature=signature
    )
    # A known (infinite) cardinality lets the zip report the unlabeled
    # stream's length, which `fit()` shows as the steps of an epoch.
    return dataset.apply(
        tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
    )
