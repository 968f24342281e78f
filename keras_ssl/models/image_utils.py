"""Images and batches as the models take them (private to `models`)."""

from typing import NamedTuple

import keras
from keras import ops


def to_float_images(images):
    """uint8 images in [0, 255] become float32 in [0, 1]; floats pass."""
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


class Batch(NamedTuple):
    """The parts of a `fit()` batch; absent parts are `None`.

    `received` describes what came, for error messages: `"dict with keys
    [...]"` or the type's name.
    """

    unlabeled: object = None
    labeled: object = None
    labels: object = None
    unlabeled_labels: object = None
    unlabeled_ids: object = None
    labeled_ids: object = None
    support: object = None
    support_labels: object = None
    received: str = ""

    def image_ids(self):
        """int32 ids of the images (unlabeled first), or `None`.

        `None` when the batch gives no ids; a part whose ids are not given
        gets `-1` (unknown).
        """
        if self.unlabeled_ids is None and self.labeled_ids is None:
            return None
        parts = []
        for images, ids in (
            (self.unlabeled, self.unlabeled_ids),
            (self.labeled, self.labeled_ids),
        ):
            if images is None:
                continue
            if ids is None:
                ids = ops.full((ops.shape(images)[0],), -1, dtype="int32")
            parts.append(ops.cast(ids, "int32"))
        return ops.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


_KEYS = Batch._fields[:-1]


def unpack_batch(data):
    """Splits a `fit()` batch into its parts, a `Batch`.

    Accepts a plain image tensor (unlabeled only), a `(x, y)` tuple (all
    labeled), or the dict that `keras_ssl.data.semi_supervised` yields
    (`"unlabeled"`, `"labeled"`, `"labels"`, and optionally
    `"unlabeled_labels"`, `"unlabeled_ids"`, `"labeled_ids"`, `"support"`,
    `"support_labels"`).
    """
    if isinstance(data, dict):
        received = f"dict with keys {sorted(data)}"
        return Batch(**{k: data.get(k) for k in _KEYS}, received=received)
    if isinstance(data, (tuple, list)):
        x, y = data[0], data[1] if len(data) > 1 else None
        if y is None:
            # `train_on_batch(x)` and Keras adapters wrap x as `(x,)`.
            return unpack_batch(x)
        return Batch(labeled=x, labels=y, received=type(data).__name__)
    return Batch(unlabeled=data, received=type(data).__name__)
