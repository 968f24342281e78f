"""Argument checks shared by the host pipelines (NumPy only, no TensorFlow).

Every check raises `ValueError` naming the argument and showing the value,
so bad input fails before any training starts.
"""

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl._checks import is_int


def is_tf_dataset(data) -> bool:
    """Whether `data` is a `tf.data.Dataset`, without importing TF."""
    return type(data).__module__.startswith("tensorflow") and hasattr(
        data, "element_spec"
    )


def check_seed(value, name: str = "seed") -> int:
    """Returns `value` as an `int`, or raises if it is not an int >= 0."""
    if not is_int(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def as_uint8_images(x, name: str = "x") -> np.ndarray:
    """Validates a batch of RGB images and returns it as uint8.

    uint8 arrays are returned as they are. Other integer arrays are cast
    when every value lies in [0, 255]. Float arrays must lie in [0, 1] and
    become `round(255 * x)`: a float array in [0, 255] is rejected rather
    than guessed at, because a dark image in that range is
    indistinguishable from one in [0, 1].

    Args:
        x: array-like of shape `(N, H, W, 3)`.
        name: str. Argument name used in error messages.

    Returns:
        A uint8 NumPy array of shape `(N, H, W, 3)`.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"`{name}` must be a batch of RGB images of shape (N, H, W, 3), "
            f"channels last. Received: {name}.shape={x.shape}"
        )
    if x.shape[-1] != 3:
        raise ValueError(
            f"`{name}` must have 3 colour channels (RGB, channels last). "
            f"Received: {name}.shape={x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (
            not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0
        ):
            raise ValueError(
                f"Float `{name}` must lie in [0, 1] (they are converted to "
                f"uint8 as round(255 * x)); cast images in [0, 255] to "
                f"uint8 first. Received: {name} with dtype={x.dtype}, "
                f"min={x.min()}, max={x.max()}"
            )
        return np.round(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(
                f"Integer `{name}` must lie in [0, 255]. Received: {name} "
                f"with dtype={x.dtype}, min={x.min()}, max={x.max()}"
            )
        return x.astype(np.uint8)
    raise ValueError(
        f"`{name}` must be uint8 (or float in [0, 1]). "
        f"Received: {name}.dtype={x.dtype}"
    )


def check_num_classes(num_classes, name: str = "num_classes"):
    """Returns `num_classes` as an int (or None), or raises."""
    if num_classes is None:
        return None
    return check_positive_int(name, num_classes)


def as_int32_labels(
    y, num_images: int, num_classes=None, name: str = "y"
) -> np.ndarray:
    """Validates integer class labels and returns them as int32.

    Args:
        y: array-like of shape `(N,)` or `(N, 1)`.
        num_images: int. The number of images the labels belong to.
        num_classes: optional int. Labels must lie in `[0, num_classes)`.
        name: str. Argument name used in error messages.

    Returns:
        An int32 NumPy array of shape `(N,)`.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{name}` must be a vector of class ids of shape (N,). "
            f"Received: {name}.shape={y.shape}"
        )
    if len(y) != num_images:
        raise ValueError(
            f"`{name}` must hold one label per image ({num_images} images). "
            f"Received: {name}.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ValueError(
            f"`{name}` must hold integer class ids. "
            f"Received: {name}.dtype={y.dtype}"
        )
    if y.size:
        low, high = int(y.min()), int(y.max())
        if low < 0:
            raise ValueError(
                f"`{name}` must hold class ids >= 0. Received: a label {low} "
                f"in {name}"
            )
        if num_classes is not None and high >= num_classes:
            raise ValueError(
                f"`{name}` must hold class ids in [0, num_classes) with "
                f"num_classes={num_classes}. Received: a label {high} in "
                f"{name}"
            )
    return y.astype(np.int32)


def check_image_size(image_size):
    """Returns `image_size` as `(height, width)` ints, or None."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        height, width = (int(v) for v in image_size)
        valid = height >= 1 and width >= 1 and len(tuple(image_size)) == 2
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "`image_size` must be None, an int or a (height, width) pair of "
            f"positive ints. Received: image_size={image_size!r}"
        )
    return height, width


def check_labeled_ids(labeled_ids, image_ids, count):
    """The labeled images' ids as int32 `(count,)`, `-1` where unknown."""
    if labeled_ids is None:
        return None if count is None else np.full(count, -1, np.int32)
    if not image_ids or count is None:
        raise ValueError(
            "`labeled_ids` needs `image_ids=True` and labeled data. "
            f"Received: image_ids={image_ids}, labeled "
            f"{'given' if count is not None else 'None'}"
        )
    ids = np.asarray(labeled_ids)
    if ids.shape != (count,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            "`labeled_ids` must be integers of shape (number of labeled "
            f"images,) = ({count},). Received: labeled_ids of shape "
            f"{ids.shape} and dtype {ids.dtype}"
        )
    if ids.size and (ids.min() < -1 or ids.max() >= 2**31 - 1):
        raise ValueError(
            "`labeled_ids` must lie in [-1, 2**31 - 1). Received: values "
            f"in [{ids.min()}, {ids.max()}]"
        )
    return ids.astype(np.int32)
