"""`KNNClassifier`: the weighted k-NN monitor of InstDisc and DINO."""

from keras import ops

from keras_ssl._checks import check_positive
from keras_ssl._checks import check_positive_int
from keras_ssl.evaluation._neighbour_classifier import NeighbourClassifier
from keras_ssl.ops.math import knn_vote
from keras_ssl.ops.math import neighbour_votes


class KNNClassifier(NeighbourClassifier):
    """Weighted k-nearest-neighbour classifier by cosine similarity.

    The monitor that self-supervised papers report during and after
    pretraining: each query takes its `k` most cosine-similar labeled
    embeddings, each voting for its class with weight
    `exp(cos / temperature)` (InstDisc, Wu et al. 2018, §3.4; DINO uses
    k = 20 and 0.07); the class with the most weight wins. Defaults
    `k = 200`, `temperature = 0.1` are InstDisc's. `temperature=None`
    gives one vote per neighbour.

    The labeled set is visited in chunks of `chunk_size` rows, keeping a
    running top-`k` per query, so memory is `O(batch_size x (chunk_size +
    k))` however many labeled examples there are; the votes equal the
    one-shot `keras_ssl.ops.knn_vote` (used when everything fits in one
    chunk). With fewer than `k` labeled examples all of them vote.

    Args:
        k: int >= 1. Number of neighbours. Defaults to `200`.
        temperature: float > 0 or `None`. Vote temperature. Defaults to
            `0.1`.
        num_classes: optional int. Defaults to `max(labels) + 1` at `fit`.
        chunk_size: int. Labeled rows per chunk. Defaults to `8192`.
        batch_size: int. Queries per batch. Defaults to `1024`.

    Example:
    ```python
    knn = keras_ssl.evaluation.KNNClassifier(k=200, temperature=0.1)
    knn.fit(keras_ssl.evaluation.embed(encoder, x_train), y_train)
    accuracy = knn.evaluate(keras_ssl.evaluation.embed(encoder, x_test),
                            y_test)
    ```

    References:
        - [Wu et al., 2018. Unsupervised Feature Learning via
          Non-Parametric Instance Discrimination](
          https://arxiv.org/abs/1805.01978)
        - [Caron et al., 2021. Emerging Properties in Self-Supervised
          Vision Transformers](https://arxiv.org/abs/2104.14294)
    """

    def __init__(
        self,
        k=200,
        temperature=0.1,
        num_classes=None,
        chunk_size=8192,
        batch_size=1024,
    ):
        self.k = check_positive_int("k", k)
        if temperature is not None:
            check_positive("temperature", temperature)
        super().__init__(num_classes, chunk_size, batch_size)
        self.temperature = temperature

    def predict_proba(self, queries):
        """Votes normalised to sum to one, `(N, K)` NumPy."""
        votes = self.scores(queries)
        return votes / votes.sum(axis=-1, keepdims=True)

    def _scores(self, queries):
        num_classes = self.fitted_num_classes
        k = min(self.k, int(self.keys.shape[0]))
        if self.keys.shape[0] <= self.chunk_size:
            return knn_vote(
                queries,
                self.keys,
                self.labels,
                num_classes,
                k=k,
                temperature=self.temperature,
            )
        top_sims = top_labels = None
        for keys, labels in self._chunks():
            sims = ops.matmul(queries, ops.transpose(keys))
            labels = ops.broadcast_to(labels[None, :], ops.shape(sims))
            if top_sims is not None:
                sims = ops.concatenate([top_sims, sims], axis=1)
                labels = ops.concatenate([top_labels, labels], axis=1)
            top_sims, index = ops.top_k(sims, k=min(k, sims.shape[1]))
            top_labels = ops.take_along_axis(labels, index, axis=1)
        return neighbour_votes(
            top_sims, top_labels, num_classes, self.temperature
        )

    def get_config(self):
        return {
            "k": self.k,
            "temperature": self.temperature,
            **super().get_config(),
        }
