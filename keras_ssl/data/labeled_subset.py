"""`labeled_subset()`: deterministic, class-balanced labeled subsets."""

import dataclasses
import math
import numbers
import os

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images
from keras_ssl.data._checks import check_num_classes
from keras_ssl.data._checks import check_seed
from keras_ssl.data._checks import is_tf_dataset


@dataclasses.dataclass(frozen=True, eq=False)
class LabeledSubset:
    """The examples `labeled_subset()` kept.

    Attributes:
        indices: int64 array, ascending positions of the kept examples in
            the source (array rows, or element positions of a dataset).
        y: int32 array, their labels, in the order of `indices`.
        x: uint8 array `(len(indices), H, W, 3)` of their images (array
            sources), else `None`.
        dataset: for a `tf.data` source, a dataset of the kept
            `(image, int32 label)` pairs in source order, else `None`.
    """

    indices: np.ndarray
    y: np.ndarray
    x: np.ndarray | None = None
    dataset: object = None

    def __len__(self):
        return len(self.indices)


def _per_class_counts(y, classes, per_class, fraction):
    """How many examples of each class to keep."""
    counts = {}
    for label in classes:
        available = int(np.sum(y == label))
        if per_class is not None:
            wanted = per_class
        else:
            # Round half up, and keep at least one example per class so
            # every class stays represented.
            wanted = max(1, math.floor(fraction * available + 0.5))
        if available < wanted:
            raise ValueError(
                f"`per_class` must not exceed the number of labeled images "
                f"of any class: class {label} has {available}. Received: "
                f"per_class={wanted}"
            )
        counts[label] = wanted
    return counts


def balanced_indices(y, per_class, fraction, seed, num_classes):
    classes = range(num_classes) if num_classes is not None else np.unique(y)
    counts = _per_class_counts(y, classes, per_class, fraction)
    chosen = []
    for label, count in counts.items():
        members = np.flatnonzero(y == label)
        # One generator per class: a class's subset does not depend on
        # which other classes are present.
        rng = np.random.default_rng([seed, int(label)])
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _read_index_file(index_file):
    if not os.path.isfile(index_file):
        raise ValueError(
            f"`index_file` is not a file. Received: index_file={index_file!r}"
        )
    with open(index_file) as f:
        names = [line.strip() for line in f]
    names = [os.path.basename(n) for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(
            f"`index_file` lists no file names. Received: "
            f"index_file={index_file!r}"
        )
    return names


def _listed_indices(filenames, index_file):
    """Positions of the examples whose file name `index_file` lists."""
    names = _read_index_file(index_file)
    basenames = np.array(
        [
            os.path.basename(n.decode() if isinstance(n, bytes) else str(n))
            for n in filenames
        ]
    )
    wanted = np.array(names)
    indices = np.flatnonzero(np.isin(basenames, wanted))
    missing = sorted(set(names) - set(basenames[indices].tolist()))
    if missing:
        raise ValueError(
            f"`index_file` lists {len(missing)} file name(s) that are not in "
            f"the data, e.g. {missing[:5]}. Received: "
            f"index_file={index_file!r}"
        )
    return indices.astype(np.int64)


def check_selection(per_class, fraction, index_file):
    given = [v is not None for v in (per_class, fraction, index_file)]
    if sum(given) != 1:
        raise ValueError(
            "Pass exactly one of `per_class`, `fraction` and `index_file`. "
            f"Received: per_class={per_class!r}, fraction={fraction!r}, "
            f"index_file={index_file!r}"
        )
    if per_class is not None:
        check_positive_int("per_class", per_class)
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0.0 < fraction <= 1.0
    ):
        raise ValueError(
            f"`fraction` must be in (0, 1]. Received: fraction={fraction!r}"
        )


def _from_dataset(
    dataset, select, index_file, filenames, image_key, label_key, file_key
):
    # Deferred: TensorFlow is optional (the helpers below import it too).
    import tensorflow as tf

    from keras_ssl.data._tf_elements import element_parts
    from keras_ssl.data._tf_elements import map_elements

    pair_of = element_parts(dataset, "dataset", True, image_key, label_key)
    spec = dataset.element_spec
    use_file_key = index_file is not None and filenames is None
    if use_file_key and not (isinstance(spec, dict) and file_key in spec):
        raise ValueError(
            "`index_file` needs the file names: pass `filenames`, or a "
            f"dataset of dicts with a {file_key!r} feature (as "
            "`tfds.load('imagenet2012')` yields). Received: element spec "
            f"{spec}"
        )

    def labels_and_names(element):
        label = pair_of(element)[1]
        return (label, element[file_key]) if use_file_key else label

    y, names = [], []
    # One pass over the source; it must yield the same order again below.
    scan = map_elements(dataset, labels_and_names).batch(4096)
    for batch in scan.as_numpy_iterator():
        if use_file_key:
            y.append(batch[0])
            names.append(batch[1])
        else:
            y.append(batch)
    y = np.concatenate(y) if y else np.zeros((0,), np.int32)
    if len(y) == 0:
        raise ValueError("`data` holds no labeled images. Received: 0 images")
    if use_file_key:
        filenames = np.concatenate(names) if names else np.array([])
    indices = select(y, filenames)
    keep = np.zeros(len(y), bool)
    keep[indices] = True
    keep = tf.constant(keep)
    subset = (
        map_elements(dataset, pair_of)
        .enumerate()
        .filter(lambda i, pair: tf.gather(keep, i))
        .map(lambda i, pair: pair)
    )
    return LabeledSubset(indices=indices, y=y[indices], dataset=subset)


def labeled_subset(
    data,
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    index_file: str | None = None,
    filenames=None,
    num_classes: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    file_name_key: str = "file_name",
) -> LabeledSubset:
    """Selects a deterministic, class-balanced labeled subset.

    Semi-supervised benchmarks train with a few labels per class: CIFAR-10
    "4000 labels" is `per_class=400`; ImageNet 1% / 10% are the subsets
    SimCLR published as index files, one image file name per line (e.g.
    `n01440764_10026.JPEG`), which tfds's `imagenet2012_subset` config
    also uses. Give exactly one of `per_class`, `fraction` and
    `index_file`.

    With `per_class` or `fraction`, each class is sampled without
    replacement by its own generator seeded with `(seed, class)`; the same
    seed always gives the same subset. `fraction` keeps
    `max(1, floor(fraction * n_c + 0.5))` of the `n_c` images of class
    `c` (rounded half up, at least one). The classes are those present in
    the labels, or `range(num_classes)` when `num_classes` is given (then
    a class without enough images raises too).

    Args:
        data: `(x, y)` arrays (or an object with `.x` and `.y`, such as an
            `ArrayDataset`), or an unbatched `tf.data.Dataset` of
            `(image, label)` pairs or dicts (`tfds.load` elements). A
            dataset is read once to collect the labels (and file names),
            so it must yield the same order every time: do not shuffle it.
        per_class: int. Images kept per class.
        fraction: float in (0, 1]. Share of each class kept.
        seed: int. Defaults to `0`.
        index_file: str. Text file of the file names to keep.
        filenames: file names of the examples, in order (needed for
            `index_file` with arrays; for a dataset of dicts the
            `file_name_key` feature is used instead). Directories are
            ignored: names are compared by their last path component.
        num_classes: optional int. Labels must lie in `[0, num_classes)`.
        image_key: str. Image feature of dict elements.
        label_key: str. Label feature of dict elements.
        file_name_key: str. File-name feature of dict elements.

    Returns:
        A `LabeledSubset` with `indices`, `y` and either `x` (arrays) or
        `dataset` (a `tf.data.Dataset` of `(image, int32 label)`).

    Example:

    ```python
    x, y = keras_ssl.data.load_npz("cifar10/train.npz")
    subset = keras_ssl.data.labeled_subset((x, y), per_class=400)
    subset.x.shape  # (4000, 32, 32, 3)
    ```

    References:
        - Chen et al., Big Self-Supervised Models are Strong
          Semi-Supervised Learners, 2020 (the 1% / 10% ImageNet subsets).
    """
    check_selection(per_class, fraction, index_file)
    seed = check_seed(seed)
    num_classes = check_num_classes(num_classes)

    def select(y, names):
        if index_file is None:
            return balanced_indices(y, per_class, fraction, seed, num_classes)
        if names is None:
            raise ValueError(
                "`index_file` needs the examples' file names: pass "
                "`filenames`. Received: filenames=None"
            )
        if len(names) != len(y):
            raise ValueError(
                f"`filenames` must name every example ({len(y)}). "
                f"Received: {len(names)} file names"
            )
        return _listed_indices(names, index_file)

    if is_tf_dataset(data):
        return _from_dataset(
            data,
            lambda y, names: select(
                as_int32_labels(y, len(y), num_classes, "labels"), names
            ),
            index_file,
            filenames,
            image_key,
            label_key,
            file_name_key,
        )
    x, y = _arrays_of(data)
    x = as_uint8_images(x, "x")
    y = as_int32_labels(y, len(x), num_classes, "y")
    if len(y) == 0:
        raise ValueError("`data` holds no labeled images. Received: 0 images")
    indices = select(y, filenames)
    return LabeledSubset(indices=indices, y=y[indices], x=x[indices])


def _arrays_of(data):
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data
    raise ValueError(
        "`data` must be an (x, y) pair of arrays, an object with `.x` and "
        f"`.y`, or a tf.data.Dataset. Received: data of type {type(data)}"
    )
