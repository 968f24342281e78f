"""`KNNMonitor`: weighted k-NN accuracy of the features during `fit()`."""

import keras
import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.evaluation.embed import predict_batches
from keras_ssl.evaluation.embed import select_output
from keras_ssl.evaluation.knn import KNNClassifier


def _check_labeled(x, y, name):
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or len(y) == 0:
        raise ValueError(
            f"`{name}` must be images `(N, ...)` with integer labels `(N,)`, "
            f"N >= 1. Received: images.shape={x.shape}, labels.shape="
            f"{y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`{name}` labels must be integer class ids. Received: "
            f"labels.dtype={y.dtype}"
        )
    return x, y.astype("int32")


def _select(outputs, output):
    """`select_output`, with `"embedding"` the entry of an unnamed dict."""
    if output is None and isinstance(outputs, dict):
        output = "embedding"
    return select_output(outputs, output).astype("float32")


class KNNMonitor(keras.callbacks.Callback):
    """Logs the weighted k-NN accuracy of the features every few epochs.

    The self-supervised monitor of InstDisc and DINO during training: at
    the end of every `every`-th epoch (and of the last one) the labeled
    images are encoded and classified by `keras_ssl.evaluation.
    KNNClassifier` (cosine similarity, the `k` nearest vote with weight
    `exp(cos / temperature)`), the evaluation the recipes report after
    pretraining (k = 200, τ = 0.1 on the `"embedding"` output). With
    `validation_data` the labeled images are the neighbours and the
    held-out images are classified; without it, the labeled images are
    cross-validated: each of `folds` fixed folds (the same every epoch,
    so that epochs compare) is classified by the other folds, and the
    accuracy is over all of them.

    The accuracy goes into the epoch's `logs` as `name` (so
    `History`, `EarlyStopping` and a `keras.callbacks.TensorBoard` listed
    after this callback see it), and, with `log_dir` or
    `summary_writer`, to a TensorBoard scalar at step `epoch`.

    The images are encoded in batches of exactly `batch_size` (the last
    one padded, `keras_ssl.evaluation.embed.predict_batches`), so a Keras
    model is traced once for the whole run.

    Args:
        x: array of labeled images, as the encoder takes them.
        y: int array `(N,)`. Their labels.
        validation_data: optional `(images, labels)` held out from `x`.
            Defaults to `None` (cross-validate `x`).
        encoder: optional `keras.Model` or function from a batch of images
            to features (or a dict of outputs). Defaults to `None`: the
            model being trained.
        output: optional str. The entry of a dict output. Defaults to
            `None`: `"embedding"` of a dict, or the tensor itself.
        every: int >= 1. Epochs between evaluations. Defaults to `1`.
        k: int >= 1. Defaults to `200`.
        temperature: float > 0 or `None`. Defaults to `0.1`.
        num_classes: optional int. Defaults to the largest label + 1.
        folds: int >= 2. Cross-validation folds, at most `len(x)`.
            Defaults to `5`.
        batch_size: int >= 1. Images per encoder call. Defaults to `256`.
        log_dir: optional str. Folder of a TensorBoard event file written
            here. Defaults to `None`.
        summary_writer: optional `tf.summary.SummaryWriter` to write to
            instead. Defaults to `None`.
        seed: int. Seed of the folds. Defaults to `0`.
        name: str. The accuracy's key in the epoch's `logs` and the
            TensorBoard scalar's name. Defaults to `"knn_accuracy"`.

    Example:

    ```python
    monitor = keras_ssl.evaluation.KNNMonitor(
        labeled.x, labeled.y, validation_data=(x_test, y_test), every=5,
        log_dir="runs/simclr/knn")
    history = pretrainer.fit(train, epochs=100, callbacks=[monitor])
    history.history["knn_accuracy"]  # one value per evaluation
    ```

    References:
        - [Wu et al., 2018. Unsupervised Feature Learning via
          Non-Parametric Instance Discrimination](
          https://arxiv.org/abs/1805.01978)
    """

    def __init__(
        self,
        x,
        y,
        validation_data=None,
        encoder=None,
        output=None,
        every=1,
        k=200,
        temperature=0.1,
        num_classes=None,
        folds=5,
        batch_size=256,
        log_dir=None,
        summary_writer=None,
        seed=0,
        name="knn_accuracy",
    ):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"`name` must be a non-empty str. Received: name={name!r}"
            )
        self.name = name
        self.x, self.y = _check_labeled(x, y, "x, y")
        self.validation_data = None
        if validation_data is not None:
            self.validation_data = _check_labeled(
                *validation_data, "validation_data"
            )
        self.every = check_positive_int("every", every)
        self.folds = check_positive_int("folds", folds)
        if validation_data is None and not 2 <= folds <= len(self.y):
            raise ValueError(
                "`folds` must be between 2 and the number of labeled images "
                f"({len(self.y)}) to cross-validate. Received: folds={folds}"
            )
        self.batch_size = check_positive_int("batch_size", batch_size)
        if log_dir is not None and summary_writer is not None:
            raise ValueError(
                "Pass `log_dir` or `summary_writer`, not both. Received: "
                f"log_dir={log_dir!r} and a summary_writer"
            )
        self.encoder = encoder
        self.output = output
        self.log_dir = log_dir
        self.summary_writer = summary_writer
        if num_classes is None:
            # From every label: a fold may lack the largest class.
            labels = [self.y] + list(self.validation_data or ())[1:]
            num_classes = int(max(v.max() for v in labels)) + 1
        self.classifier = KNNClassifier(k, temperature, num_classes)
        order = np.random.default_rng(seed).permutation(len(self.y))
        self._folds = np.array_split(order, self.folds)
        self._owns_writer = False
        self.results = {}

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self.summary_writer is None:
            # TensorBoard's writer: TensorFlow, only with a log folder.
            import tensorflow as tf

            self.summary_writer = tf.summary.create_file_writer(self.log_dir)
            self._owns_writer = True

    def on_train_end(self, logs=None):
        if self._owns_writer:
            self.summary_writer.close()
            self.summary_writer = None
            self._owns_writer = False

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == (self.params or {}).get("epochs")
        if (epoch + 1) % self.every and not last:
            return
        accuracy = self.evaluate()
        self.results[epoch] = accuracy
        if logs is not None:
            logs[self.name] = accuracy
        if self.summary_writer is not None:
            # As in `on_train_begin`.
            import tensorflow as tf

            with self.summary_writer.as_default():
                tf.summary.scalar(self.name, accuracy, step=epoch)
            self.summary_writer.flush()

    def encode(self, images):
        """Features `(N, D)` of `images`, in batches of `batch_size`."""
        encoder = self.model if self.encoder is None else self.encoder
        # One input shape for every call: the encoder is traced once.
        return _select(
            predict_batches(encoder, images, self.batch_size), self.output
        )

    def evaluate(self):
        """The k-NN accuracy of the current features (a float); NaN when
        they are not finite (a diverged model: the training's own checks,
        such as `keras.callbacks.TerminateOnNaN`, decide what follows)."""
        features = self.encode(self.x)
        if self.validation_data is not None:
            images, labels = self.validation_data
            queries = self.encode(images)
            if not (np.isfinite(features).all() and np.isfinite(queries).all()):
                return float("nan")
            self.classifier.fit(features, self.y)
            return self.classifier.evaluate(queries, labels)
        if not np.isfinite(features).all():
            return float("nan")
        correct = 0
        for held in self._folds:
            rest = np.setdiff1d(np.arange(len(self.y)), held)
            self.classifier.fit(features[rest], self.y[rest])
            predicted = self.classifier.predict(features[held])
            correct += int(np.sum(predicted == self.y[held]))
        return correct / len(self.y)
