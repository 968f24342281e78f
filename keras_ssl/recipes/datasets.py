"""In-memory data sets the recipes can run on, by name."""

import hashlib
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

    A run's data (see `runner.load_data`, which sets `labeled` and
    `seed`): the stages ask it for their batches, sizes and evaluations
    through the methods it shares with `streams.RecipeStreams`, and never
    which of the two it is.
    """

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labeled_indices: np.ndarray | None = None
    labeled_y: np.ndarray | None = None
    # The run's labeled subset (`keras_ssl.data.LabeledSubset`) and seed.
    labeled: object = None
    seed: int = 0

    # --- Sizes and identity. ---

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_labeled(self) -> int:
        return len(self.labeled.y)

    def sample_images(self, count):
        """The first `count` training images, for a look at the views."""
        return self.x_train[:count]

    def identity(self, labels=True) -> dict:
        """The sizes and a hash of a sample of the training images and of
        every label, for the stages' fingerprints; with `labels=False`,
        of the training images alone (for stages that read no labels)."""
        digest = hashlib.sha256()
        arrays = (self.x_train,)
        if labels:
            arrays += (self.y_train, self.labeled.x, self.labeled.y)
        for array in arrays:
            if array is None:
                continue
            step = max(1, len(array) // 512)
            digest.update(np.ascontiguousarray(array[::step]).tobytes())
        identity = {"train": self.num_train, "test": len(self.x_test)}
        if labels:
            digest.update(np.ascontiguousarray(self.labeled.y).tobytes())
            identity["labeled"] = int(len(self.labeled.y))
        return {**identity, "hash": digest.hexdigest()[:16]}

    # --- Streams. ---

    def pretrain_stream(
        self,
        batch_size: int,
        labeled_batch_size: int = 0,
        support=None,
        image_ids: bool = False,
        monitor_labels: bool = False,
        seed_offset: int = 0,
    ):
        """The pretraining (or distillation) stream of dict batches; the
        arguments are `streams.RecipeStreams.pretrain_stream`'s. With
        `image_ids` the labeled images carry their ids in `x_train` too
        (SimCLRv2's memory keeps each image's own keys out of its
        negatives by them); `monitor_labels` needs `y_train`."""
        from keras_ssl import data as ssl_data  # Keras: loaded when run.

        labeled = self.labeled if labeled_batch_size else None
        monitor = monitor_labels and self.y_train is not None
        sampler = None
        if support is not None:
            classes, images = support
            sampler = ssl_data.SupportSampler(
                self.labeled.x,
                self.labeled.y,
                classes_per_batch=classes,
                images_per_class=images,
                num_classes=self.num_classes,
                seed=self.seed + seed_offset,
            )
        return ssl_data.semi_supervised(
            (self.x_train, self.y_train) if monitor else self.x_train,
            (labeled.x, labeled.y) if labeled else None,
            unlabeled_batch_size=batch_size,
            labeled_batch_size=labeled_batch_size or None,
            support=sampler,
            seed=self.seed + seed_offset,
            repeat=True,
            image_ids=image_ids,
            labeled_ids=labeled.indices if labeled and image_ids else None,
            monitor_labels=monitor,
        )

    def labeled_stream(self, batch_size: int, seed_offset: int = 0):
        """`(images, labels)` batches of the labeled subset, reshuffled
        every pass. In memory every stage draws them with the run's seed
        (`seed_offset` tells the streamed stages apart)."""
        from keras_ssl import data as ssl_data  # Keras: loaded when run.

        return ssl_data.from_arrays(
            self.labeled.x,
            self.labeled.y,
            batch_size=batch_size,
            seed=self.seed,
            repeat=True,
        )

    # --- Evaluation, on the test images. ---

    def embeddings(self, model, output="embedding"):
        """`(labeled features, their labels, test features, test labels)`
        of `model`'s `output`."""
        from keras_ssl.evaluation import embed  # Keras: loaded when run.

        labeled = embed(model, self.labeled.x, batch_size=256, output=output)
        test = embed(model, self.x_test, batch_size=256, output=output)
        return labeled, self.labeled.y, test, self.y_test

    def evaluate_classifier(self, model):
        """Top-1 accuracy of a classifier's logits on the test images."""
        from keras_ssl.evaluation import embed  # Keras: loaded when run.

        logits = embed(model, self.x_test, batch_size=256)
        return {"top1": float(np.mean(np.argmax(logits, -1) == self.y_test))}

    def evaluate_knn(self, model, k=200, temperature=0.1, output=None):
        """Weighted k-NN top-1 on the test images, with the labeled
        images' features as the memory."""
        from keras_ssl.evaluation import KNNClassifier  # Keras: when run.

        labeled, labels, test, truth = self.embeddings(model, output)
        knn = KNNClassifier(
            k=k, temperature=temperature, num_classes=self.num_classes
        )
        knn.fit(labeled, labels)
        return {"top1": knn.evaluate(test, truth)}

    def representation(self, model):
        """k-NN and linear-probe test accuracy of the encoder's features
        (`reports.probe_accuracies`)."""
        from keras_ssl.recipes import reports  # Keras: loaded when run.

        return reports.probe_accuracies(model, self.labeled, self)

    def pixel_baselines(self):
        """Logistic regression and 1-NN on the labeled images' pixels
        (`reports.pixel_baselines`)."""
        from keras_ssl.recipes import reports  # Keras: loaded when run.

        return reports.pixel_baselines(self.labeled, self)


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
    # scikit-learn, and Keras through keras_ssl.data: loaded when used.
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
    # Optional: TensorFlow Datasets, only for a tfds data set.
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
        # Keras (through keras_ssl.data): loaded when a run reads data.
        from keras_ssl.data import prepare_images

        splits.x_train = prepare_images(splits.x_train, image_size, name=name)
        splits.x_test = prepare_images(splits.x_test, image_size, name=name)
    return splits


def _images(images, image_size, name):
    """An array, or a folder of class sub-folders, as uint8 RGB images at
    `image_size` (with the folder's class ids, else `None`)."""
    # Keras (through keras_ssl.data): loaded when used.
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
