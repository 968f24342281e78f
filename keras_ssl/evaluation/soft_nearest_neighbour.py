"""`SoftNearestNeighbour`: PAWS-NN, pi_d against every labeled example."""

from keras import ops

from keras_ssl._checks import check_positive
from keras_ssl.evaluation._neighbour_classifier import NeighbourClassifier
from keras_ssl.ops.math import soft_nearest_neighbour_sums


def _add_sums(a, b):
    """The softmax sums of two parts of the keys, at their common maximum."""
    max_logit = ops.maximum(a[2], b[2])
    scale_a, scale_b = ops.exp(a[2] - max_logit), ops.exp(b[2] - max_logit)
    return (
        a[0] * scale_a + b[0] * scale_b,
        a[1] * scale_a + b[1] * scale_b,
        max_logit,
    )


class SoftNearestNeighbour(NeighbourClassifier):
    """Soft nearest-neighbour classifier over all labeled embeddings.

    PAWS-NN (Assran et al., 2021, Appendix A): a query embedding `z` gets
    the class distribution `pi_d(z, z_S) = softmax(cos(z, z_S) / tau) y_S`
    against the embeddings `z_S` of *all* labeled training examples, and
    the prediction is its argmax. It is the classifier PAWS trains with,
    used here without fine-tuning to evaluate representations (the paper's
    CIFAR-10 results are PAWS-NN with the 4,000 labeled images as support).

    The labeled set is visited in chunks of `chunk_size` rows whose
    softmax sums (`keras_ssl.ops.soft_nearest_neighbour_sums`) are added
    up at a running maximum (a streaming log-sum-exp), so memory is
    `O(batch_size x chunk_size)`, 100k+ labeled examples fit, and the
    result equals the one-shot `keras_ssl.ops.soft_nearest_neighbour`.

    Args:
        temperature: float > 0. Cosine temperature `tau`. Defaults to `0.1`
            (PAWS).
        num_classes: optional int. Number of classes `K`. Defaults to
            `max(labels) + 1` at `fit`.
        chunk_size: int. Labeled rows per chunk. Defaults to `8192`.
        batch_size: int. Queries per batch. Defaults to `1024`.

    Example:
    ```python
    embed = keras_ssl.evaluation.embed
    snn = keras_ssl.evaluation.SoftNearestNeighbour(temperature=0.1)
    snn.fit(embed(model, x_labeled, output="projection"), y_labeled)
    accuracy = snn.evaluate(embed(model, x_test, output="projection"), y_test)
    ```

    References:
        - [Assran et al., 2021. Semi-Supervised Learning of Visual Features
          by Non-Parametrically Predicting View Assignments with Support
          Samples](https://arxiv.org/abs/2104.13963)
        - [Salakhutdinov and Hinton, 2007. Learning a Nonlinear Embedding
          by Preserving Class Neighbourhood
          Structure](https://proceedings.mlr.press/v2/salakhutdinov07a.html)
    """

    def __init__(
        self,
        temperature=0.1,
        num_classes=None,
        chunk_size=8192,
        batch_size=1024,
    ):
        check_positive("temperature", temperature)
        super().__init__(num_classes, chunk_size, batch_size)
        self.temperature = temperature

    def predict_proba(self, queries):
        """Class probabilities `pi_d(z, z_S)`, `(N, K)` NumPy."""
        return self.scores(queries)

    def _scores(self, queries):
        sums = None
        for keys, labels in self._chunks():
            rows = ops.one_hot(labels, self.fitted_num_classes, dtype="float32")
            chunk = soft_nearest_neighbour_sums(
                queries, keys, rows, self.temperature
            )
            sums = chunk if sums is None else _add_sums(sums, chunk)
        numerator, denominator, _ = sums
        return numerator / denominator

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}
