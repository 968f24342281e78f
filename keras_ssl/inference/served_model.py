"""`ServedModel`: an export, a `.keras` file or a published checkpoint,
called on uint8 images or on encoded image files."""

import os

import numpy as np


def _describe():
    return (
        "`model` must be a SavedModel folder (`keras_ssl.export."
        "export_saved_model`), a .keras file or a name of "
        "`keras_ssl.pretrained.CHECKPOINTS`"
    )


def check_model(model):
    """Refuses a `model` argument that names nothing loadable, before any
    work: a folder without `saved_model.pb`, a missing file, an unknown
    name. Keras models pass."""
    if not isinstance(model, str):
        # Keras, TensorFlow: loaded when a model is, not for `--help`.
        import keras

        if isinstance(model, keras.Model):
            return model
        raise ValueError(
            f"{_describe()}, or a keras.Model. Received: model={model!r}"
        )
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "saved_model.pb")):
            raise ValueError(
                f"{_describe()}; this folder has no saved_model.pb. "
                f"Received: model={model!r}"
            )
        return model
    if model.endswith(".keras"):
        if not os.path.isfile(model):
            raise ValueError(
                f"{_describe()}; this .keras file does not exist. Received: "
                f"model={model!r}"
            )
        return model
    # As `keras` above (the catalog's package imports Keras).
    from keras_ssl.pretrained.catalog import CHECKPOINTS

    if model not in CHECKPOINTS:
        raise ValueError(
            f"{_describe()}; it is neither an existing path nor a known "
            f"name. Received: model={model!r}"
        )
    return model


class ServedModel:
    """The named outputs of a model for batches of images.

    A SavedModel is called through its endpoints: `serve_encoded` for
    image files (it decodes and resizes them itself) and `serving_default`
    for uint8 arrays. A Keras model (a `.keras` file, a published
    checkpoint loaded with `keras_ssl.pretrained.load`, or a model) is
    called through `keras_ssl.export.serving_outputs`, on files decoded
    and resized to its image size (bilinear, antialiased where a side
    shrinks more than 2x: `keras_ssl.data`'s resizing). Both give
    `"embedding"`, and where the model has them `"projection"`, `"logits"`
    and `"probabilities"`.

    Args:
        model: a `check_model` argument.
    """

    def __init__(self, model):
        model = check_model(model)
        self.saved_model = None
        self.keras_model = None
        if not isinstance(model, str):
            self.keras_model = model
        elif os.path.isdir(model):
            # Each kind of model loads its own framework, when it is used.
            import tensorflow as tf

            self.saved_model = tf.saved_model.load(model)
        elif model.endswith(".keras"):
            # As above.
            import keras

            import keras_ssl  # noqa: F401  (registers keras_ssl's classes)

            self.keras_model = keras.saving.load_model(model)
        else:
            # As above.
            from keras_ssl.pretrained.catalog import load

            self.keras_model = load(model)
        if self.keras_model is not None:
            # Export: imports TensorFlow.
            from keras_ssl.export import served_image_size

            self.image_size = served_image_size(self.keras_model)
        self.output_names = sorted(self._output_names())

    def _output_names(self):
        if self.saved_model is not None:
            signature = self.saved_model.signatures["serving_default"]
            return signature.structured_outputs.keys()
        probe = np.zeros((1, *self.image_size, 3), np.uint8)
        return self.on_images(probe).keys()

    def on_images(self, images):
        """Outputs `{name: NumPy}` of uint8 images `(B, H, W, 3)`."""
        if self.saved_model is not None:
            # TensorFlow: loaded with the model (above).
            import tensorflow as tf

            serve = self.saved_model.signatures["serving_default"]
            outputs = serve(images=tf.constant(images))
        else:
            # Export: imports TensorFlow.
            from keras_ssl.export import serving_outputs

            outputs = serving_outputs(self.keras_model, images)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def on_files(self, contents):
        """`(outputs, good)` for a list of encoded images: the outputs of
        those that decode, and their positions in `contents`."""
        # TensorFlow decodes the files, loaded when the first one is read.
        import tensorflow as tf

        if self.saved_model is None:
            images, good = self._decode(contents)
            outputs = self.on_images(np.stack(images)) if good else {}
            return outputs, good
        serve = self.saved_model.signatures["serve_encoded"]
        try:
            outputs = serve(encoded=tf.constant(contents))
            return {k: np.asarray(v) for k, v in outputs.items()}, list(
                range(len(contents))
            )
        except tf.errors.InvalidArgumentError:
            if len(contents) == 1:
                return {}, []
        # A file in the batch does not decode: find it, one by one.
        parts = [self.on_files([c]) for c in contents]
        good = [i for i, (_, ok) in enumerate(parts) if ok]
        if not good:
            return {}, []
        keys = parts[good[0]][0]
        return {
            k: np.concatenate([parts[i][0][k] for i in good]) for k in keys
        }, good

    def _decode(self, contents):
        # TensorFlow decodes (above); files are resized by the data
        # pipeline's own resizing, which imports TensorFlow.
        import tensorflow as tf

        from keras_ssl.data._decode import resize

        images, good = [], []
        for i, data in enumerate(contents):
            try:
                image = tf.io.decode_image(
                    data, channels=3, expand_animations=False
                )
            except tf.errors.InvalidArgumentError:
                continue
            images.append(resize(image, self.image_size).numpy())
            good.append(i)
        return images, good
