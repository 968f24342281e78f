"""Checks of the images a model's `fit()` receives, before the first step.

The models take uint8 images in [0, 255] or float images in [0, 1], RGB,
channels last. Images outside that (floats in [0, 255], NaN, one channel,
an empty array) would otherwise train silently on garbage, so `fit()`
checks them first: in-memory arrays in full, a stream (a
`tf.data.Dataset`, a `keras.utils.PyDataset` or a generator) on its
first batch. A `tf.data.Dataset` of uint8 images with a known shape is
checked from its `element_spec` alone, without reading a batch.
`FineTuner.predict`, `evaluate` and `fit_linear_head` check their images
the same way.
"""

import collections
import types

import keras
import numpy as np

# The keys of a batch dict that hold images (`keras_ssl.data`'s batches).
IMAGE_KEYS = ("unlabeled", "labeled", "support")

_TO_RGB = (
    "convert them to RGB first, e.g. with `keras.ops.repeat(x, 3, axis=-1)`, "
    "or read image files with `keras_ssl.data.from_directory`, which "
    "converts grayscale files to RGB"
)


# Who checks: the model (or method) and what it does with the images,
# both in words for the messages, and the name of the images' argument.
_Caller = collections.namedtuple("_Caller", "model action name")


def check_fit_input(
    x, channels=3, model="The model", action="be trained on", name="x"
):
    """Checks the images of `fit(x, ...)`; returns `x` to train on.

    Args:
        x: what `fit()` was given: an array, a dict of arrays (keys
            `IMAGE_KEYS` hold images), a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a generator.
        channels: int. The colour channels the model takes.
        model: str. Names the model in error messages.
        action: str. What the model cannot do with bad images, in error
            messages ("FineTuner cannot be trained on no images").
            Defaults to `"be trained on"`.
        name: str. The argument's name in error messages. Defaults to
            `"x"`.

    Returns:
        `x`, or for a generator an equivalent generator (its first batch
        was read to check it).

    Raises:
        ValueError: naming the argument, what it holds and how to fix it.
    """
    if x is None:
        return x
    caller = _Caller(model, action, name)
    if isinstance(x, types.GeneratorType):
        try:
            first = next(x)
        except StopIteration:
            raise ValueError(
                f"{caller.model} cannot {caller.action} an empty generator: "
                f"`{caller.name}` yielded no batch."
            ) from None
        _check_batch(_features(first), channels, caller, where="first batch")
        return _chain(first, x)
    if is_tf_dataset(x):
        _check_tf_dataset(x, channels, caller)
        return x
    if isinstance(x, keras.utils.PyDataset):
        if x.num_batches == 0:
            raise ValueError(
                f"{caller.model} cannot {caller.action} an empty dataset: "
                f"`{caller.name}` ({type(x).__name__}) has no batches."
            )
        _check_batch(_features(x[0]), channels, caller, where="first batch")
        return x
    _check_batch(x, channels, caller, where=None)
    return x


def _chain(first, rest):
    yield first
    yield from rest


def _features(batch):
    """The inputs of a batch: `x` of an `(x, y[, sample_weight])` tuple."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch


def _images(x, name):
    """`(name, array)` of each image array in the inputs `x`."""
    if isinstance(x, dict):
        return [(f"{name}[{k!r}]", x[k]) for k in IMAGE_KEYS if k in x]
    if isinstance(x, (tuple, list)):
        return [] if not x else _images(x[0], name)
    return [(name, x)]


def _check_batch(x, channels, caller, where):
    found = [(name, a) for name, a in _images(x, caller.name) if a is not None]
    arrays = []
    for name, images in found:
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        _check_shape(name, tuple(images.shape), channels, caller.model)
        arrays.append((name, images))
    if found and all(a.shape[0] == 0 for _, a in arrays):
        shapes = ", ".join(f"{n}.shape={tuple(a.shape)}" for n, a in arrays)
        source = f"`{caller.name}`"
        source = f"The {where} of {source}" if where else source
        raise ValueError(
            f"{caller.model} cannot {caller.action} no images: {source} holds "
            f"none ({shapes})."
        )
    for name, images in arrays:
        _check_values(name, images, caller, where)


def _check_shape(name, shape, channels, model):
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = (
                " For grayscale images without a channel axis, add one and "
                "convert them to RGB: `keras.ops.repeat(x[..., None], 3, "
                "axis=-1)`."
            )
        raise ValueError(
            f"{model} takes a batch of images of shape (N, H, W, "
            f"{channels}), channels last. Received: {name}.shape={shape}."
            + hint
        )
    found = shape[-1]
    if found is None or found == channels:
        return
    if found == 1 and channels == 3:
        hint = f" They are 1-channel (grayscale) images: {_TO_RGB}."
    elif shape[1] == channels:
        hint = " They look channels-first: transpose them to (N, H, W, C)."
    else:
        hint = ""
    noun = "channel" if found == 1 else "channels"
    raise ValueError(
        f"{model} takes images with {channels} channels, channels last. "
        f"Received: {name} with {found} {noun} ({name}.shape={shape})." + hint
    )


def _check_values(name, images, caller, where):
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype == "uint8" or 0 in images.shape:
        return
    values = keras.ops.convert_to_numpy(images)
    low, high = values.min(), values.max()
    source = f"{name} (its {where})" if where else name
    if np.isnan(low) or np.isnan(high) or np.isinf(low) or np.isinf(high):
        count = int(np.sum(~np.isfinite(values)))
        what = (
            "every value is NaN"
            if np.isnan(values).all()
            else f"{count} of {values.size} values are NaN or infinite"
        )
        raise ValueError(
            f"{caller.model} cannot {caller.action} non-finite images: in "
            f"{source}, {what}. Check how the images are loaded and "
            "preprocessed."
        )
    if low < 0 or high > 1:
        fix = (
            "For images in [0, 255], divide them by 255 or cast them to uint8."
            if low >= 0 and high <= 255
            else "Rescale them to [0, 1]."
        )
        raise ValueError(
            f"{caller.model} takes uint8 images in [0, 255] or float images "
            f"in [0, 1]. Received: {source} with dtype={dtype}, min={low}, "
            f"max={high}. {fix}"
        )


def is_tf_dataset(x):
    return type(x).__module__.startswith("tensorflow") and hasattr(
        x, "element_spec"
    )


def _check_tf_dataset(x, channels, caller):
    # TensorFlow is optional: only a `tf.data` input needs it.
    import tensorflow as tf

    if not isinstance(x, tf.data.Dataset):
        # A distributed dataset: its batches live on the replicas.
        return
    if int(x.cardinality()) == 0:
        raise ValueError(
            f"{caller.model} cannot {caller.action} an empty dataset: "
            f"`{caller.name}` (a tf.data.Dataset) has no batches."
        )
    specs = [
        (name, spec)
        for name, spec in _images(_features(x.element_spec), caller.name)
        if isinstance(spec, tf.TensorSpec) and spec.shape.rank is not None
    ]
    for name, spec in specs:
        _check_shape(name, tuple(spec.shape), channels, caller.model)
    static = all(
        spec.dtype == tf.uint8 and spec.shape[-1] is not None
        for _, spec in specs
    )
    if static:
        return
    # Float images: their range and finiteness need one batch.
    for batch in x.take(1):
        _check_batch(_features(batch), channels, caller, where="first batch")
