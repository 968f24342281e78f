"""`load_npz()`: images and labels from a NumPy `.npz` archive."""

import os

import numpy as np

from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images


def load_npz(
    path: str,
    x_key: str = "x",
    y_key: str | None = "y",
    filenames_key: str | None = None,
    num_classes: int | None = None,
):
    """Loads and validates images (and labels) saved with `np.savez`.

    Use it for data sets kept as arrays, such as
    `../shared/datasets/cifar10/train.npz` (keys `x`, `y`, `filenames`).
    The images are checked and converted like `from_arrays()` does; the
    result feeds `from_arrays()`, `labeled_subset()`, `SupportSampler` and
    `semi_supervised()`. No TensorFlow is needed.

    Args:
        path: str. Path of the `.npz` file.
        x_key: str. Key of the `(N, H, W, 3)` images. Defaults to `"x"`.
        y_key: str or None. Key of the integer labels; `None` loads no
            labels. Defaults to `"y"`.
        filenames_key: str or None. Key of the image file names (used by
            `labeled_subset(..., index_file=...)`); `None` loads none.
            Defaults to `None`.
        num_classes: optional int. Labels must lie in `[0, num_classes)`.

    Returns:
        `(x, y)`: uint8 images and int32 labels (`y` is `None` when
        `y_key` is `None`), or `(x, y, filenames)` when `filenames_key` is
        given, with the names as a NumPy array of `str`.

    Example:

    ```python
    x, y = keras_ssl.data.load_npz("cifar10/train.npz")
    ds = keras_ssl.data.from_arrays(x, y, batch_size=256)
    ```
    """
    if not os.path.isfile(path):
        raise ValueError(f"`path` is not a file. Received: path={path!r}")
    with np.load(path, allow_pickle=False) as archive:
        keys = sorted(archive.files)
        for name, key in (
            ("x_key", x_key),
            ("y_key", y_key),
            ("filenames_key", filenames_key),
        ):
            if key is not None and key not in keys:
                raise ValueError(
                    f"`{name}` names no array of {path!r}, which holds "
                    f"{keys}. Received: {name}={key!r}"
                )
        x = as_uint8_images(archive[x_key], f"{path}[{x_key!r}]")
        y = None
        if y_key is not None:
            y = as_int32_labels(
                archive[y_key], len(x), num_classes, f"{path}[{y_key!r}]"
            )
        if filenames_key is None:
            return x, y
        filenames = np.asarray(archive[filenames_key]).astype(str)
    if filenames.shape != (len(x),):
        raise ValueError(
            f"`filenames_key` must name one file name per image "
            f"({len(x)} images). Received: {filenames_key!r} of shape "
            f"{filenames.shape}"
        )
    return x, y, filenames
