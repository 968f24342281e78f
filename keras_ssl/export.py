"""SavedModel export with named serving endpoints."""

import os
import shutil

import keras
import numpy as np
from keras import ops

from keras_ssl.models.image_utils import to_float_images


def served_image_size(model):
    """The side (or `(height, width)`) images are resized to."""
    size = getattr(model, "image_size", None)
    if size is None:
        try:
            size = model.input.shape[1]
        except (AttributeError, ValueError):
            size = None
    if size is None:
        raise ValueError(
            "`model` must say the image size it serves: an `image_size` "
            "attribute, or a known input shape (B, H, W, 3). Received: "
            f"model={model.name!r} without either"
        )
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a Keras model (a `keras_ssl.models` model or "
            "any `keras.Model` from float images in [0, 1] to features). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )


def _served_images(images, name):
    """`images` checked in the graph: a batch of at least one RGB or gray
    image of at least 1x1 pixels; gray images become RGB.

    A served function is called with tensors, so its check runs in the
    graph: a bad batch fails with a `tf.errors.InvalidArgumentError` whose
    message names the input, the shape it must have and its shape.
    """
    # TensorFlow is optional: only a SavedModel export needs it.
    import tensorflow as tf

    shape = tf.shape(images)
    # Padded, so that reading the channels of a rank-3 tensor cannot fail
    # before the check says what is wrong.
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)
    channels = padded[3]
    valid = tf.reduce_all(
        [
            tf.size(shape) == 4,
            tf.logical_or(channels == 1, channels == 3),
            tf.reduce_all(padded[:3] > 0),
        ]
    )
    check = tf.debugging.Assert(
        valid,
        [
            f"`{name}` must be a batch of uint8 images (B, H, W, 3), or "
            "(B, H, W, 1) for gray ones, with B, H, W >= 1 (an unbatched "
            "image needs a batch axis; an empty batch is refused). "
            f"Received: {name}.shape =",
            shape,
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        rgb = tf.cond(
            channels == 1,
            lambda: tf.tile(images, [1, 1, 1, 3]),
            lambda: tf.identity(images),
        )
    return tf.ensure_shape(rgb, (None, None, None, 3))


def serving_outputs(model, images):
    """The named outputs a served model returns for uint8 images.

    Images of any size are resized (bilinear) to the side the model was
    trained at. A model names its outputs with a `serving_outputs(images)`
    method (every `keras_ssl.models` model has one); any other Keras model
    serves its output as `"embedding"`. `"probabilities"` are added where
    there are `"logits"`.
    """
    x = ops.image.resize(to_float_images(images), served_image_size(model))
    if hasattr(model, "serving_outputs"):
        outputs = dict(model.serving_outputs(x))
    else:
        outputs = {"embedding": model(x, training=False)}
    if "logits" in outputs:
        outputs["probabilities"] = ops.softmax(outputs["logits"], axis=-1)
    return outputs


def export_saved_model(model, path, overwrite=False):
    """Writes `model` as a TensorFlow SavedModel for serving.

    Endpoints:
    - `serving_default(images)`: uint8 images `(B, H, W, 3)` of any size,
      or gray ones `(B, H, W, 1)` (repeated to RGB); returns the dict of
      `serving_outputs` (`embedding`, and `projection`, `logits`,
      `probabilities` where they exist).
    - `serve_encoded(encoded)`: a `(B,)` string tensor of JPEG or PNG bytes,
      each decoded to RGB and resized; same outputs.

    Both check their input when called and fail with a
    `tf.errors.InvalidArgumentError` naming it and the shape it must have:
    an unbatched image, another channel count (RGBA included: drop the
    alpha channel first), a 0x0 image, or an empty batch (`B = 0`: a
    request without an image is refused, not answered with empty outputs).

    The SavedModel is written to a new temporary folder next to `path`
    and renamed into place, so `path` never holds a partial export or a
    mix with an older one.

    Args:
        model: a `keras_ssl.models` model (`FineTuner`, `Distiller` (its
            student is served), `SimCLRv2Pretrainer`, ...), or any Keras
            model from float images in [0, 1] to features.
        path: str. Output directory.
        overwrite: bool. Whether to replace an existing non-empty `path`.
            Defaults to `False`.

    Returns:
        `path`.

    Example:
    ```python
    keras_ssl.export.export_saved_model(classifier, "/tmp/classifier")
    served = tf.saved_model.load("/tmp/classifier")
    served.signatures["serving_default"](images=uint8_batch)["logits"]
    ```
    """
    # TensorFlow is optional: only a SavedModel export needs it.
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "SavedModel export needs the TensorFlow backend. Received: "
            f"backend={keras.backend.backend()}"
        )
    _check_model(model)
    _check_target(path, overwrite)
    _check_finite(model)
    size = served_image_size(model)

    def serve(images):
        return serving_outputs(model, _served_images(images, "images"))

    def serve_encoded(encoded):
        def decode(data):
            image = tf.io.decode_image(
                data, channels=3, expand_animations=False
            )
            image = tf.image.resize(image, size)
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

        check = tf.debugging.Assert(
            tf.size(encoded) > 0,
            [
                "`encoded` must hold at least one image (an empty batch is "
                "refused). Received: encoded.shape =",
                tf.shape(encoded),
            ],
        )
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
        images = tf.map_fn(
            decode,
            encoded,
            fn_output_signature=tf.TensorSpec((*size, 3), tf.uint8),
        )
        return serving_outputs(model, images)

    # The endpoints track the variables they use (a distiller's student's,
    # not its teacher's).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        # Any shape: the served function checks it (`_served_images`), so
        # that a bad batch fails with a message naming what it must be.
        input_signature=[tf.TensorSpec(None, tf.uint8, name="images")],
    )
    archive.add_endpoint(
        name="serve_encoded",
        fn=serve_encoded,
        input_signature=[tf.TensorSpec((None,), tf.string, name="encoded")],
    )
    _write_atomically(archive, path)
    return path


def _check_target(path, overwrite):
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"`path` is a non-empty directory; pass overwrite=True to "
            f"replace it. Received: path={path!r}"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`path` is a file. Received: path={path!r}")


def _check_finite(model):
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(
                "The model has non-finite weights and is not exported. "
                f"Received: a model whose {variable.path} is not finite"
            )


def _write_atomically(archive, path):
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(
        parent, f".tmp{os.getpid()}-{os.path.basename(path)}"
    )
    old = temporary + "-old"
    for stale in (temporary, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        archive.write_out(temporary, verbose=False)
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
