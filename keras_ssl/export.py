"""SavedModel export with named serving endpoints."""

import keras
from keras import ops

from keras_ssl.models.distiller import Distiller
from keras_ssl.models.fine_tuner import FineTuner
from keras_ssl.models.image_utils import to_float_images


def _image_size(model):
    if hasattr(model, "image_size"):
        return model.image_size
    return model.input.shape[1]


def serving_outputs(model, images):
    """The named outputs a served model returns for uint8 images.

    Images of any size are resized (bilinear) to the side the model was
    trained at. Returns a dict with `"embedding"` and, where the model has
    them, `"projection"`, `"logits"` and `"probabilities"`.
    """
    if isinstance(model, Distiller):
        # A distiller serves its student.
        model = model.student
    size = _image_size(model)
    x = to_float_images(images)
    x = ops.image.resize(x, (size, size))
    if isinstance(model, FineTuner):
        x = model.augment(x, training=False)
        embedding = model.network(x, training=False)
        outputs = {
            "embedding": embedding,
            "logits": model.classifier(embedding),
        }
    else:
        outputs = model(x, training=False)
        if not isinstance(outputs, dict):
            outputs = {"embedding": outputs}
    if "logits" in outputs:
        outputs["probabilities"] = ops.softmax(outputs["logits"], axis=-1)
    return outputs


def export_saved_model(model, path):
    """Writes `model` as a TensorFlow SavedModel for serving.

    Endpoints:
    - `serving_default(images)`: uint8 images `(B, H, W, 3)` of any size;
      returns the dict of `serving_outputs` (`embedding`, and `projection`,
      `logits`, `probabilities` where they exist).
    - `serve_encoded(encoded)`: a `(B,)` string tensor of JPEG or PNG bytes,
      each decoded to RGB and resized; same outputs.

    Args:
        model: a `keras_ssl.models` model (`FineTuner`, `Distiller` (its
            student is exported), `SimCLRv2Pretrainer`, ...), or any Keras
            model from float images in [0, 1] to features.
        path: str. Output directory.

    Returns:
        `path`.

    Example:
    ```python
    keras_ssl.export.export_saved_model(classifier, "/tmp/classifier")
    served = tf.saved_model.load("/tmp/classifier")
    served.signatures["serving_default"](images=uint8_batch)["logits"]
    ```
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "SavedModel export needs the TensorFlow backend. Received: "
            f"backend={keras.backend.backend()}"
        )
    if isinstance(model, Distiller):
        model = model.student
    size = _image_size(model)

    def serve(images):
        return serving_outputs(model, images)

    def serve_encoded(encoded):
        def decode(data):
            image = tf.io.decode_image(
                data, channels=3, expand_animations=False
            )
            image = tf.image.resize(image, (size, size))
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

        images = tf.map_fn(
            decode,
            encoded,
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
        )
        return serving_outputs(model, images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")
        ],
    )
    archive.add_endpoint(
        name="serve_encoded",
        fn=serve_encoded,
        input_signature=[tf.TensorSpec((None,), tf.string, name="encoded")],
    )
    archive.write_out(path, verbose=False)
    return path
