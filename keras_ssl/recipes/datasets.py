"""In-memory data sets the recipes can run on, by name."""

import os
from dataclasses import dataclass

import numpy as np

from keras_ssl.data.tfds import prepared_tfds_builder


@dataclass
class ArraySplits:
    """Train and test images (uint8, NHWC) with int32 labels.

    `y_train` is `None` when some training images have no label (a
    separate unlabeled pool); `labeled_indices` are then the positions in
    `x_train` of the labeled images, which the labeled subset takes as
    they are instead of sampling it from the config.
    """

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labeled_indices: np.ndarray | None = None
    labeled_y: np.ndarray | None = None


def _split(x, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def digits(image_size: int = 16, seed: int = 0) -> ArraySplits:
    """scikit-learn's bundled 8×8 digits (1,797 images), as RGB uint8.

    Needs no download: the images ship with scikit-learn. They are scaled
    from [0, 16] to [0, 255], upsampled to `image_size` and split 80/20.
    """
    from sklearn.datasets import load_digits

    from keras_ssl.data import prepare_images

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype("uint8")
    x = prepare_images(x, image_size, method="pad", name="digits")
    y = bunch.target.astype("int32")
    x_train, y_train, x_test, y_test = _split(x, y, 0.2, seed)
    return ArraySplits(x_train, y_train, x_test, y_test, 10)


def npz(path: str) -> ArraySplits:
    """A folder with `train.npz` and `test.npz` (keys `x`, `y`)."""
    splits = []
    for split in ("train", "test"):
        file = os.path.join(path, f"{split}.npz")
        if not os.path.exists(file):
            raise ValueError(
                f"Expected `{split}.npz` in the data set folder. Received: "
                f"path={path!r}"
            )
        with np.load(file) as arrays:
            splits += [arrays["x"], arrays["y"].astype("int32")]
    num_classes = int(max(splits[1].max(), splits[3].max())) + 1
    return ArraySplits(*splits, num_classes)


def tfds_arrays(name: str, data_dir=None) -> ArraySplits:
    """A small TensorFlow Datasets data set loaded whole into memory.

    It must be prepared under `data_dir` (see `prepared_tfds_builder`).
    """
    import tensorflow_datasets as tfds

    builder = prepared_tfds_builder(name, data_dir)
    splits = []
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        splits += [data["image"], data["label"].astype("int32")]
    num_classes = int(max(splits[1].max(), splits[3].max())) + 1
    return ArraySplits(*splits, num_classes)


def load(name: str, image_size: int, data_dir=None, seed=0) -> ArraySplits:
    """Loads a data set by name.

    Args:
        name: `"digits"` (bundled with scikit-learn), `"cifar10"` (from
            `data_dir` when it holds `train.npz`/`test.npz`, else from
            TensorFlow Datasets), `"npz"` (a `data_dir` with
            `train.npz`/`test.npz`), or `"tfds:NAME"`. A TensorFlow
            Datasets data set must already be prepared under `data_dir`
            (tfds's default folder when `None`): nothing is downloaded.
        image_size: int. Side of the returned images; others are
            converted by `keras_ssl.data.prepare_images`.
        data_dir: optional str.
        seed: int. Seed of the digits train/test split.

    Returns:
        An `ArraySplits`.
    """
    if name == "digits":
        return digits(image_size, seed)
    if name == "npz" or (
        name == "cifar10"
        and data_dir
        and os.path.exists(os.path.join(data_dir, "train.npz"))
    ):
        if not data_dir:
            raise ValueError(
                "The `npz` data set needs `data_dir`. Received: data_dir=None"
            )
        splits = npz(data_dir)
    elif name == "cifar10":
        splits = tfds_arrays("cifar10", data_dir)
    elif name.startswith("tfds:"):
        splits = tfds_arrays(name[len("tfds:") :], data_dir)
    else:
        raise ValueError(
            "Unknown `dataset`. Expected 'digits', 'cifar10', 'npz' or "
            f"'tfds:NAME'. Received: dataset={name!r}"
        )
    if splits.x_train.shape[1:] != (image_size, image_size, 3):
        from keras_ssl.data import prepare_images

        splits.x_train = prepare_images(splits.x_train, image_size, name=name)
        splits.x_test = prepare_images(splits.x_test, image_size, name=name)
    return splits


def _images(images, image_size, name):
    """An array, or a folder of class sub-folders, as uint8 RGB images at
    `image_size` (with the folder's class ids, else `None`)."""
    from keras_ssl import data as ssl_data

    if isinstance(images, (str, os.PathLike)):
        folder = ssl_data.from_directory(
            os.fspath(images), image_size=image_size, batch_size=256
        )
        parts = list(folder.as_numpy_iterator())
        x = np.concatenate([p[0] for p in parts])
        return x, np.concatenate([p[1] for p in parts]).astype("int32")
    images = ssl_data.prepare_images(images, image_size, name=name)
    if not len(images):
        raise ValueError(
            f"`{name}` must hold at least one image. Received: "
            f"{name}.shape={images.shape}"
        )
    return images, None


def _labels(y, count, name):
    y = np.asarray(y)
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be {count} integer class ids, one per image. "
            f"Received: {name} with shape={y.shape}, dtype={y.dtype}"
        )
    return y.astype("int32")


def _check_ids(y, name):
    if len(y) and y.min() < 0:
        raise ValueError(
            f"`{name}` must be class ids >= 0 (for the labeled images). "
            f"Received: min={y.min()}"
        )


def _listed(ids, most=5):
    shown = ", ".join(str(i) for i in ids[:most])
    return f"[{shown}{', ...' if len(ids) > most else ''}]"


def _check_classes(labeled_y, y_test):
    """The class count: labeled images of at least two classes numbered
    from 0 without a gap, and no test class without a labeled image."""
    classes = np.unique(labeled_y)
    num_classes = int(classes[-1]) + 1
    missing = np.setdiff1d(np.arange(num_classes), classes)
    if len(missing):
        raise ValueError(
            "`y` must number the classes 0, 1, ..., K-1 with at least one "
            "labeled image of each. Received: a largest label of "
            f"{num_classes - 1} in y, and {len(missing)} classes below it "
            f"without a labeled image: {_listed(missing)}"
        )
    if num_classes < 2:
        raise ValueError(
            "`y` must hold at least 2 classes among the labeled images. "
            f"Received: only class {classes.tolist()}"
        )
    unseen = np.setdiff1d(y_test, classes)
    if len(unseen):
        raise ValueError(
            "`y_test` must hold only classes that have labeled images in "
            f"`y` (0 to {num_classes - 1}). Received: y_test with class "
            f"ids {_listed(unseen)}"
        )
    return num_classes


def _indices(labeled_indices, count):
    indices = np.asarray(labeled_indices)
    ok = indices.ndim == 1 and len(indices) > 0
    ok = ok and np.issubdtype(indices.dtype, np.integer)
    if not ok or indices.min() < 0 or indices.max() >= count:
        raise ValueError(
            "`labeled_indices` must be a non-empty list of positions in "
            f"`x` (ints in [0, {count})). Received: "
            f"labeled_indices={labeled_indices!r}"
        )
    if len(np.unique(indices)) != len(indices):
        raise ValueError(
            "`labeled_indices` must not repeat a position. Received: "
            f"labeled_indices={labeled_indices!r}"
        )
    return np.sort(indices).astype(np.int64)


def from_user(
    x,
    y=None,
    x_test=None,
    y_test=None,
    unlabeled=None,
    labeled_indices=None,
    image_size: int = 32,
) -> ArraySplits:
    """The user's images, as the recipes' `fit(x=..., y=..., ...)` takes
    them.

    `x` are the training images and `y` their labels; all of them are
    labeled unless `labeled_indices` picks the positions in `x` whose
    label is used (the others join the unlabeled images, and their `y`
    may be anything, e.g. -1). `unlabeled`
    adds images without labels. Pretraining sees `x` and `unlabeled`
    together. Arrays of any size and channel count are converted by
    `keras_ssl.data.prepare_images`; a str is a folder with one
    sub-folder of images per class (`keras_ssl.data.from_directory`),
    whose class ids are the labels.

    Returns:
        An `ArraySplits` with its `labeled_indices`.
    """
    image_size = int(image_size)
    x, folder_y = _images(x, image_size, "x")
    y = folder_y if y is None else y
    if y is None:
        raise ValueError("`y` must give the labels of `x`. Received: y=None")
    y = _labels(y, len(x), "y")
    if x_test is None:
        raise ValueError(
            "`x_test` and `y_test` must be given with `x`: the report "
            "measures every model on them. Hold out part of the labeled "
            "images if there is no test set. Received: x_test=None"
        )
    x_test, folder_y = _images(x_test, image_size, "x_test")
    y_test = folder_y if y_test is None else y_test
    if y_test is None:
        raise ValueError(
            "`y_test` must give the labels of `x_test`. Received: None"
        )
    y_test = _labels(y_test, len(x_test), "y_test")
    _check_ids(y_test, "y_test")
    indices = (
        np.arange(len(x), dtype=np.int64)
        if labeled_indices is None
        else _indices(labeled_indices, len(x))
    )
    _check_ids(y[indices], "y")
    num_classes = _check_classes(y[indices], y_test)
    x_train, y_train = x, (y if y.min() >= 0 else None)
    if unlabeled is not None:
        pool = _images(unlabeled, image_size, "unlabeled")[0]
        x_train, y_train = np.concatenate([x, pool]), None
    return ArraySplits(
        x_train, y_train, x_test, y_test, num_classes, indices, y[indices]
    )
