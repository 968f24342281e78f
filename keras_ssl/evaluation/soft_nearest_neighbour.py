"""`SoftNearestNeighbour`: PAWS-NN, pi_d against every labeled example."""

from keras import ops

from keras_ssl.evaluation._neighbour_classifier import NeighbourClassifier
from keras_ssl.evaluation._neighbour_classifier import check_temperature
from keras_ssl.ops.math import soft_nearest_neighbour


class SoftNearestNeighbour(NeighbourClassifier):
    """Soft nearest-neighbour classifier over all labeled embeddings.

    PAWS-NN (Assran et al., 2021, Appendix A): a query embedding `z` gets
    the class distribution `pi_d(z, z_S) = softmax(cos(z, z_S) / tau) y_S`
    against the embeddings `z_S` of *all* labeled training examples, and
    the prediction is its argmax. It is the classifier PAWS trains with,
    used here without fine-tuning to evaluate representations (the paper's
    CIFAR-10 results are PAWS-NN with the 4,000 labeled images as support).

    The labeled set is visited in chunks of `chunk_size` rows with a
    streaming log-sum-exp (running maximum, rescaled numerator and
    denominator), so memory is `O(batch_size x chunk_size)` and 100k+
    labeled examples fit; the result equals the one-shot softmax
    (`keras_ssl.ops.soft_nearest_neighbour`, used when everything fits in
    one chunk).

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
        check_temperature(temperature)
        super().__init__(num_classes, chunk_size, batch_size)
        self.temperature = temperature

    def predict_proba(self, queries):
        """Class probabilities `pi_d(z, z_S)`, `(N, K)` NumPy."""
        return self.scores(queries)

    def _scores(self, queries):
        num_classes = self.fitted_num_classes
        if self.keys.shape[0] <= self.chunk_size:
            rows = ops.one_hot(self.labels, num_classes, dtype="float32")
            return soft_nearest_neighbour(
                queries, self.keys, rows, self.temperature
            )
        batch = ops.shape(queries)[0]
        running_max = ops.full((batch, 1), -float("inf"), "float32")
        numerator = ops.zeros((batch, num_classes), "float32")
        denominator = ops.zeros((batch, 1), "float32")
        for keys, labels in self._chunks():
            # Keys are unit vectors already: the dot product is the cosine.
            logits = ops.matmul(queries, ops.transpose(keys)) / self.temperature
            new_max = ops.maximum(
                running_max, ops.max(logits, axis=1, keepdims=True)
            )
            rescale = ops.exp(running_max - new_max)
            weights = ops.exp(logits - new_max)
            rows = ops.one_hot(labels, num_classes, dtype="float32")
            numerator = numerator * rescale + ops.matmul(weights, rows)
            denominator = denominator * rescale + ops.sum(
                weights, axis=1, keepdims=True
            )
            running_max = new_max
        return numerator / denominator

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}
