"""`embed()`: a model's embeddings of many images, in batches."""

import weakref

import keras
import numpy as np
from keras import tree

from keras_ssl._checks import check_positive_int


def embed(model, images, batch_size: int = 256, output: str | None = None):
    """Runs `model` in inference mode over `images` and returns NumPy.

    An array of images is run in batches of exactly `batch_size` (the last
    one padded, see `predict_batches`), so that a model's compiled predict
    function is traced once, whatever the number of images: embedding
    the labeled images and then the test images does not trace it again.
    A `tf.data.Dataset` or a `keras.utils.PyDataset` of batches (labels,
    if present, are ignored) goes through `model.predict`.

    Args:
        model: `keras.Model`. An encoder returning a tensor, or a model
            returning a dict (the pretrainers' `call`), with `output`
            naming the entry to use.
        images: the images, see above.
        batch_size: int. Batch size for arrays. Defaults to `256`.
        output: optional str. Entry of a dict output, e.g. `"embedding"`
            (the encoder output) or `"projection"` (PAWS-NN). Defaults to
            `None` (the model returns a tensor).

    Returns:
        A float NumPy array `(N, D)`.

    Example:
    ```python
    z = keras_ssl.evaluation.embed(pretrainer, x_test, output="projection")
    ```
    """
    if isinstance(images, np.ndarray):
        outputs = predict_batches(model, images, batch_size)
    else:
        outputs = model.predict(images, batch_size=batch_size, verbose=0)
    return select_output(outputs, output)


def predict_batches(model, images, batch_size: int = 256):
    """`model`'s outputs on an array of `images`, in batches of exactly
    `batch_size` (the last one padded with zeros, its padding dropped).

    Every call has the same input shape, so the compiled predict function
    of a `keras.Model` (`predict_on_batch`) is traced once for all the
    arrays it is given, where `model.predict` traces it again for each new
    batch shape (an array's last, short batch, or an array shorter than
    `batch_size`). `model` may also be a function from a batch of images
    to outputs.

    Args:
        model: `keras.Model`, or a function of a batch.
        images: array `(N, ...)`, N >= 1.
        batch_size: int >= 1. Defaults to `256`.

    Returns:
        The outputs of all `N` images: an array, or a dict of arrays.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError(
            "`images` must hold at least one image. Received: "
            f"images.shape={images.shape}"
        )
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        count = len(batch)
        padding = np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)
        # Per batch: a model that the first batch builds has its own
        # function from the next one on.
        outputs = _batch_function(model)(np.concatenate([batch, padding]))
        # Under several replicas the outputs may hold more rows than the
        # batch; the first `count` are the batch's own.
        parts.append(
            tree.map_structure(lambda t: np.asarray(t)[:count], outputs)
        )
    return tree.map_structure(lambda *t: np.concatenate(t), *parts)


# Each model's inference function (`_batch_function`), for its lifetime.
_FUNCTIONS = weakref.WeakKeyDictionary()


def _batch_function(model):
    """A function of one batch that runs `model` in inference mode.

    On TensorFlow, for a built `keras.Model` on one replica: the model
    called through one `tf.function` of its own, kept with the model and
    traced once. Keras's predict function is made again by every
    `compile` (a stage's model is compiled again, e.g. by the fine-tuning
    folds), and TensorFlow counts the traces of every model's predict
    function together. Elsewhere `predict_on_batch`, which distributes a
    batch over several replicas, or `model` itself for a function.
    """
    if not hasattr(model, "predict_on_batch"):
        return model
    strategy = getattr(model, "distribute_strategy", None)
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if (
        keras.backend.backend() != "tensorflow"
        or not model.built
        or replicas > 1
    ):
        return model.predict_on_batch
    if model not in _FUNCTIONS:
        import tensorflow as tf  # TensorFlow: the backend in use.

        own = weakref.ref(model)  # The function must not keep it alive.

        def infer(batch):
            return own()(batch, training=False)

        # Its own function: the model is traced for the first batch's
        # shape, and every batch of `predict_batches` has that shape.
        # XLA where Keras's own predict function would use it.
        jit = bool(getattr(model, "jit_compile", False))
        _FUNCTIONS[model] = tf.function(infer, jit_compile=jit)
    function = _FUNCTIONS[model]
    return lambda batch: function(batch)


def select_output(outputs, output):
    """`outputs[output]` of a dict output, else `outputs`, as NumPy."""
    if isinstance(outputs, dict):
        if output not in outputs:
            raise ValueError(
                "The model returns a dict: `output` must name one of its "
                f"entries {sorted(outputs)}. Received: output={output!r}"
            )
        outputs = outputs[output]
    elif output is not None:
        raise ValueError(
            "`output` names an entry of a dict output, but the model "
            f"returns a tensor. Received: output={output!r}"
        )
    return np.asarray(outputs)
