"""The part of the neighbour classifiers that does not depend on the rule."""

import numpy as np
from keras import ops

from keras_ssl._checks import check_positive_int
from keras_ssl.ops.math import l2_normalize


def _as_matrix(x, name):
    x = np.asarray(ops.convert_to_numpy(x))
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must have rank 2 (examples, dim). Received: "
            f"{name}.shape={x.shape}"
        )
    finite = np.isfinite(x) if np.issubdtype(x.dtype, np.number) else True
    if not np.all(finite):
        bad = int(x.size - np.sum(finite))
        raise ValueError(
            f"`{name}` must be finite. Received: {name} with {bad} NaN or "
            f"infinite values of {x.size} ({name}.shape={x.shape})"
        )
    return x


class NeighbourClassifier:
    """Stores l2-normalised labeled embeddings; batches the queries.

    Subclasses implement `_scores(queries)`: class scores `(q, K)` of one
    batch of normalised queries against the stored embeddings, visiting
    those in chunks of `chunk_size` rows so that memory stays
    `O(batch_size x chunk_size)` however many labeled examples there are.
    """

    def __init__(self, num_classes=None, chunk_size=8192, batch_size=1024):
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.keys = None
        self.labels = None

    def fit(self, embeddings, labels):
        """Stores the labeled embeddings `(M, D)` and int labels `(M,)`.

        Returns:
            The classifier itself.
        """
        embeddings = _as_matrix(embeddings, "embeddings")
        labels = np.asarray(ops.convert_to_numpy(labels))
        if labels.shape != (len(embeddings),):
            raise ValueError(
                "`labels` must have shape (M,) for `embeddings` of shape "
                f"(M, D). Received: labels.shape={labels.shape}, "
                f"embeddings.shape={embeddings.shape}"
            )
        if len(labels) == 0:
            raise ValueError(
                "`embeddings` must hold at least one labeled example. "
                "Received: embeddings.shape[0]=0"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                "`labels` must be integer class ids. Received: "
                f"labels.dtype={labels.dtype}"
            )
        num_classes = self.num_classes or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"`labels` must lie in [0, num_classes={num_classes}). "
                f"Received: labels in [{labels.min()}, {labels.max()}]"
            )
        self.fitted_num_classes = num_classes
        self.keys = l2_normalize(ops.convert_to_tensor(embeddings, "float32"))
        self.labels = ops.convert_to_tensor(labels.astype("int32"))
        return self

    def _chunks(self):
        total = int(self.keys.shape[0])
        for start in range(0, total, self.chunk_size):
            stop = min(start + self.chunk_size, total)
            yield self.keys[start:stop], self.labels[start:stop]

    def _scores(self, queries):
        raise NotImplementedError

    def scores(self, queries):
        """Class scores `(N, K)` of `queries` `(N, D)`, as NumPy."""
        if self.keys is None:
            raise ValueError(
                f"This {type(self).__name__} is not fitted yet: call "
                "`fit(embeddings, labels)` first."
            )
        queries = _as_matrix(queries, "queries")
        dim = int(self.keys.shape[1])
        if queries.shape[1] != dim:
            raise ValueError(
                f"`queries` must have the dim of the fitted embeddings "
                f"({dim}). Received: queries.shape={queries.shape}"
            )
        out = [np.zeros((0, self.fitted_num_classes), "float32")]
        for start in range(0, len(queries), self.batch_size):
            batch = ops.convert_to_tensor(
                queries[start : start + self.batch_size], "float32"
            )
            out.append(ops.convert_to_numpy(self._scores(l2_normalize(batch))))
        return np.concatenate(out)

    def predict(self, queries):
        """Predicted class ids `(N,)`: the argmax of the scores."""
        return np.argmax(self.scores(queries), axis=-1).astype("int32")

    def evaluate(self, queries, labels):
        """Top-1 accuracy (a float in [0, 1]) on `queries` with `labels`."""
        labels = np.asarray(ops.convert_to_numpy(labels)).reshape(-1)
        predicted = self.predict(queries)
        if labels.shape != predicted.shape:
            raise ValueError(
                "`labels` must have one entry per query. Received: "
                f"labels.shape={labels.shape}, {len(predicted)} queries"
            )
        return float(np.mean(predicted == labels))

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "chunk_size": self.chunk_size,
            "batch_size": self.batch_size,
        }
