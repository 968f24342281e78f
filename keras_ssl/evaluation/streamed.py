"""Evaluation on streamed splits: top-k accuracy and k-NN, batch by batch.

The images of a split never sit in memory together: each batch is run
through the model and scored as it arrives. Only the k-NN's bank of
features (one float vector per labeled image) is held.
"""

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.evaluation.embed import select_output
from keras_ssl.evaluation.knn import KNNClassifier


def _outputs(model, images, output):
    outputs = select_output(model.predict_on_batch(images), output)
    return outputs.astype(np.float32)


def _batches(dataset):
    """`(images, labels)` of each batch of `(images, labels, ...)`."""
    for batch in dataset:
        yield batch[0], np.asarray(batch[1])


def top_k_hits(scores, labels, top_k):
    """How many rows of `scores` have their label among the `k` highest
    scores, for each `k` of `top_k`. A tie counts against the label, so
    that a label without a single k-NN vote is never a top-5 hit."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    own = scores[np.arange(len(labels)), labels]
    rank = np.sum(scores >= own[:, None], axis=1) - 1
    return {k: int(np.sum(rank < k)) for k in top_k}


def _check_top_k(top_k):
    top_k = tuple(check_positive_int("top_k", k) for k in top_k)
    if not top_k:
        raise ValueError("`top_k` must name at least one k. Received: ()")
    return top_k


def _accuracies(hits, count, top_k):
    if count == 0:
        raise ValueError("The evaluation stream yielded no images.")
    return {f"top{k}": hits[k] / count for k in top_k}


def streamed_accuracy(model, dataset, top_k=(1, 5), output=None):
    """Top-k accuracies of a classifier over a stream of batches.

    Args:
        model: `keras.Model` returning logits `(B, K)` (or a dict, with
            `output` naming the logits).
        dataset: iterable of `(images, labels, ...)` batches, e.g. a
            `keras_ssl.data.streaming.ImageStream`'s `to_tf_dataset()`.
        top_k: tuple of int. Defaults to `(1, 5)`.
        output: optional str. Entry of a dict output.

    Returns:
        A dict `{"top1": float, "top5": float, "examples": int}`.

    Example:

    ```python
    val = keras_ssl.data.streaming.ImageStream(
        table, 256, 224, crop="center", shuffle=False, repeat=False)
    keras_ssl.evaluation.streamed_accuracy(classifier, val.to_tf_dataset())
    ```
    """
    top_k = _check_top_k(top_k)
    hits, count = dict.fromkeys(top_k, 0), 0
    for images, labels in _batches(dataset):
        found = top_k_hits(_outputs(model, images, output), labels, top_k)
        hits = {k: hits[k] + found[k] for k in top_k}
        count += len(labels)
    return {**_accuracies(hits, count, top_k), "examples": count}


def streamed_embeddings(model, dataset, output=None):
    """The features and labels of a stream of `(images, labels, ...)`
    batches, computed batch by batch: `(float32 (N, D), int32 (N,))`."""
    features, labels = [], []
    for images, batch_labels in _batches(dataset):
        features.append(_outputs(model, images, output))
        labels.append(batch_labels.astype(np.int32))
    if not features:
        raise ValueError("The bank stream yielded no images.")
    return np.concatenate(features), np.concatenate(labels)


def streamed_knn_accuracy(
    model,
    bank,
    queries,
    k=200,
    temperature=0.1,
    num_classes=None,
    top_k=(1, 5),
    output=None,
):
    """Weighted k-NN top-k accuracies with streamed bank and queries.

    The bank's features are computed batch by batch and kept (not its
    images); each query batch is embedded and voted on as it arrives
    (`keras_ssl.evaluation.KNNClassifier`: cosine similarity, votes
    `exp(cos / temperature)` of the `k` nearest).

    Args:
        model: `keras.Model` returning features `(B, D)` (or a dict, with
            `output`).
        bank: iterable of labeled `(images, labels, ...)` batches.
        queries: iterable of `(images, labels, ...)` batches to classify.
        k: int. Defaults to `200`.
        temperature: float or `None`. Defaults to `0.1`.
        num_classes: optional int.
        top_k: tuple of int. Defaults to `(1, 5)`.
        output: optional str. Entry of a dict output.

    Returns:
        A dict `{"top1": float, "top5": float, "examples": int}`.
    """
    top_k = _check_top_k(top_k)
    classifier = KNNClassifier(
        k=k, temperature=temperature, num_classes=num_classes
    )
    classifier.fit(*streamed_embeddings(model, bank, output))
    hits, count = dict.fromkeys(top_k, 0), 0
    for images, labels in _batches(queries):
        votes = classifier.scores(_outputs(model, images, output))
        found = top_k_hits(votes, labels, top_k)
        hits = {key: hits[key] + found[key] for key in top_k}
        count += len(labels)
    return {**_accuracies(hits, count, top_k), "examples": count}
