"""Image conversions shared by the models (private to `keras_ssl.models`)."""

import keras
from keras import ops


def to_float_images(images):
    """uint8 images in [0, 255] become float32 in [0, 1]; floats pass."""
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


def unpack_batch(data):
    """Splits a `fit()` batch into (unlabeled, labeled, labels).

    Accepts a plain image tensor (unlabeled only), a `(x, y)` tuple (all
    labeled), or the dict that `keras_ssl.data.semi_supervised` yields:
    `{"unlabeled": ..., "labeled": ..., "labels": ...}`.
    """
    if isinstance(data, dict):
        return (
            data.get("unlabeled"),
            data.get("labeled"),
            data.get("labels"),
        )
    if isinstance(data, (tuple, list)):
        x, y = data[0], data[1] if len(data) > 1 else None
        if y is None:
            # `train_on_batch(x)` and Keras adapters wrap x as `(x,)`.
            return unpack_batch(x)
        return None, x, y
    return data, None, None
