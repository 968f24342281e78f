"""`embed()`: a model's embeddings of many images, in batches."""

import numpy as np


def embed(model, images, batch_size: int = 256, output: str | None = None):
    """Runs `model` in inference mode over `images` and returns NumPy.

    Uses `model.predict`, so the images may be an array (uint8 or float, as
    the model takes them), a `tf.data.Dataset` or a `keras.utils.PyDataset`
    of batches (labels, if present, are ignored).

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
    outputs = model.predict(images, batch_size=batch_size, verbose=0)
    return select_output(outputs, output)


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
