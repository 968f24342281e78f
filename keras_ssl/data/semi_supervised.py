"""`semi_supervised()`: unlabeled and labeled batches zipped into dicts."""

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images
from keras_ssl.data._checks import check_labeled_ids
from keras_ssl.data._checks import check_num_classes
from keras_ssl.data._checks import check_seed
from keras_ssl.data._checks import is_tf_dataset
from keras_ssl.data._host_dataset import HostDataset
from keras_ssl.data.support_sampler import SupportSampler

_UNLABELED, _LABELED = 0, 1  # permutation streams of one seed


class SemiSupervisedDataset(HostDataset):
    """The NumPy semi-supervised stream: dict batches, no TensorFlow.

    Each batch is a dict (the format the pretrainers' `train_step` reads):

    - `"unlabeled"`: uint8 `(unlabeled_batch_size, H, W, 3)`;
    - `"unlabeled_labels"`: int32 `(unlabeled_batch_size,)`, the true labels
      of the unlabeled images, when `unlabeled_labels` is given (for
      monitoring pseudo-labels only; never train on them);
    - `"labeled"`: uint8 `(labeled_batch_size, H', W', 3)` and
      `"labels"`: int32 `(labeled_batch_size,)`, when labeled data is given;
    - `"unlabeled_ids"` (and `"labeled_ids"`): int32, each image's id
      (its row in the unlabeled images; `labeled_ids`, or `-1` where
      unknown, for the labeled ones) when `image_ids=True`, so a memory
      queue can tell an image's own keys from other images';
    - `"support"`: uint8 `(C·I, H'', W'', 3)` and `"support_labels"`:
      int32 `(C·I,)` (plus `"support_targets"`, float32 `(C·I, K)`, for a
      sampler with `one_hot=True`), when a `SupportSampler` is given.

    An epoch is one pass over the unlabeled images (`steps_per_epoch =
    N_u // unlabeled_batch_size`; the short last batch is dropped so every
    batch has a static shape). The labeled images cycle on their own,
    reshuffled at each of their passes, and batch `g` of the whole stream
    takes support batch `support.sample(g)`. Everything is a pure
    function of `(seed, epoch, index)`.

    Use `semi_supervised()` to build one; see there for the arguments.
    """

    def __init__(
        self,
        unlabeled_images,
        labeled_images=None,
        labels=None,
        *,
        unlabeled_batch_size: int,
        labeled_batch_size: int | None = None,
        support=None,
        shuffle: bool = True,
        seed: int = 0,
        repeat: bool = False,
        num_classes: int | None = None,
        unlabeled_labels=None,
        image_ids: bool = False,
        labeled_ids=None,
        **kwargs,
    ):
        self._set_unlabeled(unlabeled_images, unlabeled_batch_size)
        self.num_classes = check_num_classes(num_classes)
        self.unlabeled_labels = None
        if unlabeled_labels is not None:
            self.unlabeled_labels = as_int32_labels(
                unlabeled_labels,
                len(self.unlabeled_images),
                self.num_classes,
                "unlabeled_labels",
            )
        _check_labeled_args(labeled_images, labeled_batch_size)
        self._set_labeled(labeled_images, labels, labeled_batch_size)
        self.image_ids = bool(image_ids)
        self.labeled_ids = check_labeled_ids(
            labeled_ids,
            self.image_ids,
            None if labeled_images is None else len(self.labeled_images),
        )
        self.support = _check_support(support)
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed)
        super().__init__(
            steps_per_epoch=len(self.unlabeled_images)
            // self.unlabeled_batch_size,
            repeat=repeat,
            **kwargs,
        )

    def _set_unlabeled(self, images, batch_size):
        """Checks and stores the unlabeled images and batch size."""
        self.unlabeled_images = as_uint8_images(images, "unlabeled")
        self.unlabeled_batch_size = check_positive_int(
            "unlabeled_batch_size", batch_size
        )
        _check_enough(
            len(self.unlabeled_images),
            self.unlabeled_batch_size,
            "unlabeled_batch_size",
            "unlabeled",
        )

    def _set_labeled(self, images, labels, batch_size):
        """Checks and stores the labeled images, labels and batch size."""
        self.labeled_images = self.labels = None
        self.labeled_batch_size = None
        if images is None:
            return
        self.labeled_images = as_uint8_images(images, "labeled")
        self.labels = as_int32_labels(
            labels, len(self.labeled_images), self.num_classes, "labels"
        )
        self.labeled_batch_size = check_positive_int(
            "labeled_batch_size", batch_size
        )
        _check_enough(
            len(self.labeled_images),
            self.labeled_batch_size,
            "labeled_batch_size",
            "labeled",
        )

    def batch_sizes(self):
        sizes = {"unlabeled_batch_size": self.unlabeled_batch_size}
        if self.labeled_batch_size is not None:
            sizes["labeled_batch_size"] = self.labeled_batch_size
        if self.support is not None:
            sizes.update(self.support.batch_sizes())
        return sizes

    def _rows(self, stream, epoch, index, count, batch_size):
        start = index * batch_size
        if not self.shuffle:
            return np.arange(start, start + batch_size)
        order = self.permutation(self.seed, stream, epoch, count)
        return order[start : start + batch_size]

    def batch_at(self, epoch, index):
        rows = self._rows(
            _UNLABELED,
            epoch,
            index,
            len(self.unlabeled_images),
            self.unlabeled_batch_size,
        )
        batch = {"unlabeled": self.unlabeled_images[rows]}
        if self.image_ids:
            batch["unlabeled_ids"] = rows.astype(np.int32)
        if self.unlabeled_labels is not None:
            batch["unlabeled_labels"] = self.unlabeled_labels[rows]
        step = self.global_step(epoch, index)
        if self.labeled_images is not None:
            count = len(self.labeled_images)
            # The labeled images run their own epochs, of whole batches.
            labeled_epoch, labeled_index = divmod(
                step, count // self.labeled_batch_size
            )
            rows = self._rows(
                _LABELED,
                labeled_epoch,
                labeled_index,
                count,
                self.labeled_batch_size,
            )
            batch["labeled"] = self.labeled_images[rows]
            batch["labels"] = self.labels[rows]
            if self.image_ids:
                batch["labeled_ids"] = self.labeled_ids[rows]
        if self.support is not None:
            batch.update(self.support.features(step))
        return batch


def _check_enough(count, batch_size, name, source):
    if count < batch_size:
        raise ValueError(
            f"`{name}` must not exceed the number of {source} images "
            f"({count}). Received: {name}={batch_size}"
        )


def _check_labeled_args(labeled, labeled_batch_size):
    if labeled is None and labeled_batch_size is not None:
        raise ValueError(
            "`labeled_batch_size` needs labeled data. Received: "
            f"labeled=None, labeled_batch_size={labeled_batch_size!r}"
        )
    if labeled is not None and labeled_batch_size is None:
        raise ValueError(
            "`labeled_batch_size` is required with labeled data. "
            "Received: labeled_batch_size=None"
        )


def _check_support(support):
    if support is not None and not isinstance(support, SupportSampler):
        raise ValueError(
            "`support` must be a keras_ssl.data.SupportSampler. Received: "
            f"support of type {type(support)}"
        )
    return support


def _unlabeled_source(unlabeled):
    """The unlabeled images (array or tf.data) of a source."""
    if is_tf_dataset(unlabeled):
        return unlabeled
    if getattr(unlabeled, "dataset", None) is not None:  # LabeledSubset
        return unlabeled.dataset
    if getattr(unlabeled, "x", None) is not None:
        return unlabeled.x
    if isinstance(unlabeled, (tuple, list)) and len(unlabeled) in (1, 2):
        return unlabeled[0]
    return unlabeled


def _unlabeled_labels(unlabeled):
    """The labels of an array source of unlabeled images (monitoring)."""
    labels = getattr(unlabeled, "y", None)
    if labels is None and isinstance(unlabeled, (tuple, list)):
        labels = unlabeled[1] if len(unlabeled) == 2 else None
    if labels is None:
        raise ValueError(
            "`monitor_labels=True` needs the labels of the unlabeled "
            "images: pass `unlabeled` as an `(images, labels)` pair, an "
            "object with `.x` and `.y`, or a tf.data.Dataset of "
            "`(image, label)` pairs or dicts. Received: unlabeled of type "
            f"{type(unlabeled).__name__} without labels"
        )
    return labels


def _labeled_source(labeled):
    """`(images, labels)` arrays, or a tf.data dataset, of a source."""
    if labeled is None or is_tf_dataset(labeled):
        return labeled
    if getattr(labeled, "dataset", None) is not None:  # LabeledSubset
        return labeled.dataset
    if getattr(labeled, "x", None) is not None:
        if getattr(labeled, "y", None) is None:
            raise ValueError(
                "`labeled` must have labels. Received: an object with y=None"
            )
        return labeled.x, labeled.y
    if isinstance(labeled, (tuple, list)) and len(labeled) == 2:
        return tuple(labeled)
    raise ValueError(
        "`labeled` must be an (images, labels) pair, an object with `.x` "
        "and `.y`, or a tf.data.Dataset of (image, label) pairs. Received: "
        f"labeled of type {type(labeled)}"
    )


def semi_supervised(
    unlabeled,
    labeled=None,
    *,
    unlabeled_batch_size: int,
    labeled_batch_size: int | None = None,
    support=None,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = False,
    num_classes: int | None = None,
    shuffle_buffer_size: int = 10_000,
    image_key: str = "image",
    label_key: str = "label",
    monitor_labels: bool = False,
    image_ids: bool = False,
    labeled_ids=None,
    **kwargs,
):
    """Zips unlabeled and labeled batches into the training stream.

    SimCLRv2 (distillation), PAWS and SemPPL train on unlabeled batches
    together with labeled ones; the papers let the unlabeled set include
    the labeled images, and so may you. Every batch is a dict:

    ```
    {"unlabeled": uint8 (unlabeled_batch_size, H, W, 3),
     "unlabeled_labels": int32 (unlabeled_batch_size,),  # monitor_labels
     "unlabeled_ids": int32 (unlabeled_batch_size,),     # image_ids
     "labeled_ids": int32 (labeled_batch_size,),  # image_ids, with labeled
     "labeled":   uint8 (labeled_batch_size, H, W, 3),   # with `labeled`
     "labels":    int32 (labeled_batch_size,),           # with `labeled`
     "support":   uint8 (C·I, H, W, 3),                  # with `support`
     "support_labels": int32 (C·I,),                     # with `support`
     "support_targets": float32 (C·I, K)}   # with SupportSampler(one_hot=True)
    ```

    An unlabeled-only stream (`labeled=None`, no support) still yields
    dicts, with the one key `"unlabeled"`; `from_arrays(x)` is the way to
    get plain uint8 image batches. The models take both.

    The epoch is one pass over the unlabeled data (`steps_per_epoch =
    N_u // unlabeled_batch_size`, short last batch dropped); the labeled
    data repeats, reshuffled each pass. Two implementations:

    - **NumPy** (all sources arrays): a `SemiSupervisedDataset`, a
      `keras.utils.PyDataset` that `fit()` takes on every backend without
      TensorFlow; `.to_tf_dataset(input_context)` for `tf.distribute`.
    - **tf.data** (any source a `tf.data.Dataset` of unbatched elements;
      array sources are converted): a prefetched `tf.data.Dataset`.
      Shuffling uses a buffer of `shuffle_buffer_size` seeded with `seed`
      (unlabeled) and `seed + 1` (labeled), reshuffled each pass. Batch
      `i` of pass `k` takes support batch `k * steps_per_pass + i`.

    Args:
        unlabeled: images `(N_u, H, W, 3)` (uint8, or float in [0, 1]); an
            `(x,)` / `(x, y)` pair or an object with `.x` (labels are
            ignored unless `monitor_labels`); or a `tf.data.Dataset` of
            images, `(image, ...)` tuples or dicts with `image_key`.
        labeled: optional `(images, labels)` pair, object with `.x` / `.y`
            (`ArrayDataset`, `LabeledSubset`), or a `tf.data.Dataset` of
            `(image, label)` pairs or dicts.
        unlabeled_batch_size: int. Unlabeled images per batch.
        labeled_batch_size: int. Labeled images per batch; required with
            `labeled`.
        support: optional `keras_ssl.data.SupportSampler` (PAWS).
        shuffle: bool. Defaults to `True`.
        seed: int. Defaults to `0`.
        repeat: bool. Infinite stream; pass `steps_per_epoch` to `fit()`.
            Defaults to `False`.
        num_classes: optional int. Labels must lie in `[0, num_classes)`.
        shuffle_buffer_size: int. tf.data path only. Defaults to `10000`.
        image_key: str. Image feature of dict elements (tf.data path).
        label_key: str. Label feature of dict elements (tf.data path).
        monitor_labels: bool. Also yield the true labels of the unlabeled
            images as `"unlabeled_labels"`, taken from an `(x, y)` pair,
            an object with `.y` or a dataset with labels, for monitoring
            only (e.g. `SemPPLPretrainer`'s pseudo-label precision and
            recall); the models never train on them. Defaults to `False`.
        image_ids: bool. Also yield each image's id: `"unlabeled_ids"`,
            the image's position in the unlabeled source, and, with
            labeled data, `"labeled_ids"` (see `labeled_ids`). A memory
            queue uses them to keep an image's own earlier keys out of its
            negatives (`keras_ssl.models.SimCLRv2Pretrainer`). Defaults to
            `False`.
        labeled_ids: optional ints `(N_l,)`, with `image_ids=True`: the
            id of each labeled image in the unlabeled source (e.g.
            `LabeledSubset.indices` when the labeled images were drawn
            from the unlabeled ones), or `-1` where it is not there.
            Defaults to `-1` for every labeled image.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset` (NumPy path).

    Returns:
        A `SemiSupervisedDataset` (NumPy sources) or a `tf.data.Dataset`.

    Example:

    ```python
    x, y = keras_ssl.data.load_npz("cifar10/train.npz")
    subset = keras_ssl.data.labeled_subset((x, y), per_class=400)
    stream = keras_ssl.data.semi_supervised(
        x, subset, unlabeled_batch_size=256, labeled_batch_size=64)
    model.fit(stream, epochs=100)
    ```
    """
    _check_labeled_args(labeled, labeled_batch_size)
    monitor_labels = bool(monitor_labels)
    source, unlabeled = unlabeled, _unlabeled_source(unlabeled)
    labeled = _labeled_source(labeled)
    unlabeled_labels = None
    if monitor_labels and not is_tf_dataset(unlabeled):
        unlabeled_labels = _unlabeled_labels(source)
    options = dict(
        unlabeled_batch_size=unlabeled_batch_size,
        labeled_batch_size=labeled_batch_size,
        support=support,
        shuffle=shuffle,
        seed=seed,
        repeat=repeat,
        num_classes=num_classes,
        image_ids=image_ids,
        labeled_ids=labeled_ids,
    )
    if not is_tf_dataset(unlabeled) and not is_tf_dataset(labeled):
        labeled_images, labels = labeled if labeled is not None else (None,) * 2
        return SemiSupervisedDataset(
            unlabeled,
            labeled_images,
            labels,
            unlabeled_labels=unlabeled_labels,
            **options,
            **kwargs,
        )
    # Deferred: this imports TensorFlow, needed only for tf.data sources.
    from keras_ssl.data._semi_supervised_tf import semi_supervised_tf

    return semi_supervised_tf(
        unlabeled,
        labeled,
        unlabeled_labels=unlabeled_labels,
        monitor_labels=monitor_labels,
        **_checked_options(labeled is not None, **options),
        buffer=check_positive_int("shuffle_buffer_size", shuffle_buffer_size),
        keys=(image_key, label_key),
    )


def _checked_options(with_labeled, **options):
    """The options of the tf.data path, checked as the NumPy path does."""
    options["unlabeled_batch_size"] = check_positive_int(
        "unlabeled_batch_size", options["unlabeled_batch_size"]
    )
    if with_labeled:
        options["labeled_batch_size"] = check_positive_int(
            "labeled_batch_size", options["labeled_batch_size"]
        )
    else:
        options["labeled_batch_size"] = None
    options["support"] = _check_support(options["support"])
    options["seed"] = check_seed(options["seed"])
    options["num_classes"] = check_num_classes(options["num_classes"])
    for flag in ("shuffle", "repeat", "image_ids"):
        options[flag] = bool(options[flag])
    return options
