"""In-memory data sets the recipes can run on, by name."""

import os
from dataclasses import dataclass

import numpy as np


@dataclass
class ArraySplits:
    """Train and test images (uint8, NHWC) with int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def _upsample(x: np.ndarray, image_size: int) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor, then padding."""
    factor = max(1, image_size // x.shape[1])
    x = x.repeat(factor, axis=1).repeat(factor, axis=2)
    pad = image_size - x.shape[1]
    if pad < 0:
        raise ValueError(
            f"`image_size` must be >= {x.shape[1]}. Received: "
            f"image_size={image_size}"
        )
    before, after = pad // 2, pad - pad // 2
    return np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))


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

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype("uint8")
    x = np.repeat(x[..., None], 3, axis=-1)
    x = _upsample(x, image_size)
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


def prepared_tfds_builder(name: str, data_dir=None):
    """The tfds builder of `name`, which must be prepared under `data_dir`.

    Nothing is downloaded: without network access tfds would spend minutes
    in retries before failing, so a data set that is not prepared fails at
    once, naming the folder it is expected in.

    Raises:
        ValueError: `name` is not a TensorFlow Datasets name.
        FileNotFoundError: the data set is not prepared under `data_dir`
            (tfds's default folder when `data_dir` is `None`).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TensorFlow Datasets data set. Received: {name!r}"
        ) from None
    if builder.is_prepared():
        return builder
    folder = os.fspath(builder.data_dir)
    root = folder
    for _ in builder.info.full_name.split("/"):
        root = os.path.dirname(root)
    raise FileNotFoundError(
        f"The TensorFlow Datasets data set {name!r} is not prepared under "
        f"{root}: expected it in {folder}. The recipes do not download "
        "data. Prepare it where there is network access with `tfds build "
        f"{name} --data_dir {root}` and copy the folder over, or give the "
        "folder that holds a prepared copy as `data_dir` (`--data_dir`)."
    )


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
        image_size: int. Side the images must have.
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
    if splits.x_train.shape[1] != image_size:
        raise ValueError(
            f"`image_size` must match the data set's images "
            f"({splits.x_train.shape[1]} px). Received: "
            f"image_size={image_size}"
        )
    return splits
