"""`embed_images()` and `predict_images()`: a model over a folder of
image files or an array file, batch by batch, into a table."""

import dataclasses
import sys
import time

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.inference.image_source import ImageSource
from keras_ssl.inference.served_model import ServedModel
from keras_ssl.inference.served_model import check_model
from keras_ssl.inference.table_writer import TableWriter
from keras_ssl.inference.table_writer import check_out


@dataclasses.dataclass
class InferenceResult:
    """What a run wrote.

    Attributes:
        rows: int. Rows written (one per image that decoded).
        corrupt: list of str. Files that did not decode (not written).
        out: str or `None`. The output file (`None`: standard output).
    """

    rows: int
    corrupt: list
    out: object


class _Progress:
    """`done/total images` on standard error, at most 10 times a second."""

    def __init__(self, total, label, enabled):
        self.total, self.label, self.enabled = total, label, enabled
        self.done, self.shown = 0, 0.0

    def add(self, count):
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self.shown > 0.1 or self.done == self.total):
            self.shown = now
            end = "\n" if self.done == self.total else ""
            sys.stderr.write(
                f"\r{self.label}: {self.done}/{self.total} images{end}"
            )
            sys.stderr.flush()


def _run(model, images, out, batch_size, label, progress, check, select):
    """Checks every argument, then writes `select(outputs)` of each batch."""
    check_model(model)
    source = ImageSource(images)
    check_out(out)
    batch_size = check_positive_int("batch_size", batch_size)
    served = ServedModel(model)
    check(served)
    writer = TableWriter(out)
    corrupt = []
    bar = _Progress(len(source), label, progress)
    try:
        for names, items in source.batches(batch_size):
            if source.files is None:
                outputs, good = served.on_images(items), range(len(names))
            else:
                outputs, good = served.on_files(items)
                bad = sorted(set(range(len(names))) - set(good))
                corrupt += [names[i] for i in bad]
            writer.write([names[i] for i in good], select(outputs))
            bar.add(len(names))
    finally:
        writer.close()
    return InferenceResult(rows=writer.rows, corrupt=corrupt, out=out)


def embed_images(
    model,
    images,
    out,
    batch_size: int = 64,
    output: str = "embedding",
    progress: bool = True,
):
    """Writes a model's embedding of every image of a folder or array.

    One row per image: its `name` (the file's path relative to the
    folder, or its index in the array) and `embedding_0 ...` (`.csv`,
    `.parquet`), or the arrays `name` and `embedding` `(N, D)` (`.npz`).
    Files are read, decoded and run batch by batch; files that do not
    decode are skipped and listed in the result. Every argument is
    checked before any image is read.

    Args:
        model: a SavedModel folder (`keras_ssl.export.export_saved_model`),
            a `.keras` file, a name of `keras_ssl.pretrained.CHECKPOINTS`
            (loaded with `keras_ssl.pretrained.load`) or a `keras.Model`.
        images: str. A folder (image files in it and its sub-folders) or
            a `.npy` / `.npz` file of uint8 images `(N, H, W, 3)`.
        out: str. Output path ending in `.csv`, `.npz` or `.parquet`
            (parquet needs `pyarrow`).
        batch_size: int. Images per model call. Defaults to `64`.
        output: str. The served output to write, e.g. `"projection"`.
            Defaults to `"embedding"` (the encoder's features).
        progress: bool. Show a progress line on standard error. Defaults
            to `True`.

    Returns:
        An `InferenceResult`: rows written, corrupt files, output path.

    Example:
    ```python
    result = keras_ssl.inference.embed_images(
        "runs/simclr/export/pretrained", "photos/", "embeddings.parquet")
    result.corrupt  # files that did not decode
    ```
    """
    if out is None:
        raise ValueError("`out` must be an output path. Received: out=None")

    def check(served):
        if output not in served.output_names:
            raise ValueError(
                f"`output` must be one of the model's outputs "
                f"{served.output_names}. Received: output={output!r}"
            )

    def select(outputs):
        return {output: outputs[output].astype(np.float32)} if outputs else {}

    return _run(
        model, images, out, batch_size, "embed", progress, check, select
    )


def predict_images(
    model, images, out=None, batch_size: int = 64, progress: bool = True
):
    """Writes a classifier's class and probabilities for every image.

    For a model with a classification output (a fine-tuned or distilled
    export, a `FineTuner`, a published fine-tuned checkpoint); a
    pretraining-only model is refused before any image is read. One row
    per image: `name`, `class` (the most probable class id),
    `probability` (its probability) and `probabilities_0 ...` (every
    class's; the `.npz` array `probabilities` `(N, K)`). Files that do not
    decode are skipped and listed in the result.

    Args:
        model: as in `embed_images`.
        images: as in `embed_images`.
        out: optional str. Output path ending in `.csv`, `.npz` or
            `.parquet`. Defaults to `None`: CSV on standard output.
        batch_size: int. Images per model call. Defaults to `64`.
        progress: bool. Show a progress line on standard error. Defaults
            to `True`.

    Returns:
        An `InferenceResult`.

    Example:
    ```python
    keras_ssl.inference.predict_images(
        "runs/simclr/export/finetuned", "photos/", "predictions.csv")
    ```
    """

    def check(served):
        if "probabilities" not in served.output_names:
            raise ValueError(
                "`model` has no classification output: it serves "
                f"{served.output_names}, no `logits`/`probabilities` (a "
                "pretraining-only model?). Export a fine-tuned or distilled "
                f"model. Received: model={model!r}"
            )

    def select(outputs):
        if not outputs:
            return {}
        probabilities = outputs["probabilities"].astype(np.float32)
        classes = np.argmax(probabilities, axis=-1)
        return {
            "class": classes.astype(np.int32),
            "probability": probabilities[np.arange(len(classes)), classes],
            "probabilities": probabilities,
        }

    return _run(
        model, images, out, batch_size, "predict", progress, check, select
    )
