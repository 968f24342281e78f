"""Stateless math shared by SimCLRv2, PAWS and SemPPL.

Every function here is written on `keras.ops` so it runs on any Keras
backend, and each is tested against a NumPy reference in
`tests/ops/test_math.py`.
"""

import keras
from keras import ops

from keras_ssl._checks import check_positive

# Logit of a candidate that must not count (an anchor against itself, an
# empty memory slot, a support view of the query's own image): exp() of it
# is exactly 0 in float32, and it cannot win an argmax.
MASKED_LOGIT = -1e9


def loss_dtype(x) -> str:
    """The dtype a loss on `x` is computed in: `"float64"` for a float64
    `x`, `"float32"` for every other dtype.

    Softmaxes over thousands of candidates and logs of probabilities are
    done in at least float32, also under a mixed-precision policy (SimCLR
    computes its loss in float32 too); float64 stays float64 (the NumPy
    reference tests).

    Args:
        x: tensor whose dtype decides.

    Returns:
        `"float64"` or `"float32"`.
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    return "float64" if dtype == "float64" else "float32"


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
    """Scales `x` to unit l2 norm along `axis`.

    Args:
        x: tensor.
        axis: int. Axis to normalise over. Defaults to `-1`.
        epsilon: float. Lower bound on the squared norm, so that a zero vector
            stays zero instead of becoming NaN. Defaults to `1e-12`.

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, epsilon))


def cosine_similarity_matrix(a, b):
    """All pairwise cosine similarities between the rows of `a` and `b`.

    Args:
        a: tensor of shape `(N, D)`.
        b: tensor of shape `(M, D)`.

    Returns:
        A tensor of shape `(N, M)` with `cos(a_i, b_j)` at `[i, j]`.
    """
    return ops.matmul(l2_normalize(a), ops.transpose(l2_normalize(b)))


def sharpen(p, temperature: float):
    """Sharpens a distribution: `p^(1/T) / sum(p^(1/T))` (PAWS eq. 2 note).

    Args:
        p: tensor of probabilities, classes on the last axis.
        temperature: float > 0. `T < 1` sharpens, `T = 1` is the identity.

    Returns:
        A tensor of the shape of `p` whose rows sum to one.
    """
    check_positive("temperature", temperature)
    powered = ops.power(ops.maximum(p, 0.0), 1.0 / temperature)
    return powered / ops.maximum(
        ops.sum(powered, axis=-1, keepdims=True), 1e-12
    )


def soft_cross_entropy(targets, logits=None, probs=None, epsilon=1e-12):
    """Per-example cross-entropy `-sum_k t_k log q_k` with soft targets.

    Give exactly one of `logits` (then `log q = log_softmax(logits)`, the
    stable form) or `probs`.

    Args:
        targets: tensor `(..., K)` of target distributions.
        logits: tensor `(..., K)` of unnormalised log-probabilities.
        probs: tensor `(..., K)` of probabilities.
        epsilon: float. Floor on `probs` before the log. Defaults to `1e-12`.

    Returns:
        A tensor of shape `(...)`.
    """
    if (logits is None) == (probs is None):
        raise ValueError("Give exactly one of `logits` or `probs`.")
    if logits is not None:
        log_q = ops.log_softmax(logits, axis=-1)
    else:
        log_q = ops.log(ops.maximum(probs, epsilon))
    return -ops.sum(targets * log_q, axis=-1)


def entropy(p, epsilon: float = 1e-12):
    """Shannon entropy `-sum_k p_k log p_k` over the last axis (nats)."""
    return -ops.sum(p * ops.log(ops.maximum(p, epsilon)), axis=-1)


def soft_nearest_neighbour(
    queries, support, support_labels, temperature, mask=None
):
    """PAWS's soft nearest-neighbour classifier pi_d (eq. 1).

    `p_i = sum_j softmax_j(cos(z_i, z_j) / tau) y_j`: a similarity-weighted
    average of the support labels. PAWS trains with it, PAWS-NN evaluates
    with it (`keras_ssl.evaluation.SoftNearestNeighbour`).

    Args:
        queries: tensor `(N, D)`.
        support: tensor `(M, D)`.
        support_labels: tensor `(M, K)` of (soft) one-hot labels.
        temperature: float > 0, `tau`.
        mask: optional bool tensor `(N, M)`; where it is `False`, support
            row `j` takes no part in query `i`'s softmax (e.g. the views
            of the query's own image). Defaults to `None`.

    Returns:
        A tensor `(N, K)` of class probabilities.
    """
    numerator, denominator, _ = soft_nearest_neighbour_sums(
        queries, support, support_labels, temperature, mask
    )
    return numerator / denominator


def soft_nearest_neighbour_sums(
    queries, support, support_labels, temperature, mask=None
):
    """The sums whose ratio is `soft_nearest_neighbour`.

    With logits `l_ij = cos(z_i, z_j) / tau` and `m_i = max_j l_ij`, returns
    `numerator_i = sum_j exp(l_ij - m_i) y_j`, `denominator_i =
    sum_j exp(l_ij - m_i)` and `m_i`. The sums over disjoint parts of a
    support set add up once rescaled to a common `m`, so a support set
    too large for memory can be visited in parts (a streaming softmax).

    Args: as `soft_nearest_neighbour`.

    Returns:
        `(numerator, denominator, max_logit)`, of shapes `(N, K)`,
        `(N, 1)` and `(N, 1)`.
    """
    check_positive("temperature", temperature)
    logits = cosine_similarity_matrix(queries, support) / temperature
    if mask is not None:
        logits = ops.where(mask, logits, MASKED_LOGIT)
    max_logit = ops.max(logits, axis=-1, keepdims=True)
    weights = ops.exp(logits - max_logit)
    numerator = ops.matmul(weights, ops.cast(support_labels, weights.dtype))
    denominator = ops.sum(weights, axis=-1, keepdims=True)
    return numerator, denominator, max_logit


def neighbour_votes(
    similarities, labels, num_classes: int, temperature=None, valid=None
):
    """Class votes of given neighbours: one each, or `exp(sim / T)`.

    Args:
        similarities: tensor `(N, k)`. Cosine similarity of each query to
            each of its neighbours.
        labels: int tensor `(N, k)`. The neighbours' classes.
        num_classes: int. Number of classes.
        temperature: optional float > 0. Defaults to `None` (one vote per
            neighbour).
        valid: optional bool tensor `(N, k)`; neighbours where it is
            `False` do not vote. Defaults to `None`.

    Returns:
        A float tensor `(N, num_classes)` of votes.
    """
    if temperature is None:
        weights = ops.ones_like(similarities)
    else:
        check_positive("temperature", temperature)
        weights = ops.exp(similarities / temperature)
    if valid is not None:
        weights = weights * ops.cast(valid, weights.dtype)
    one_hot = ops.one_hot(labels, num_classes, dtype=weights.dtype)
    return ops.sum(one_hot * weights[..., None], axis=1)


def knn_vote(
    queries,
    keys,
    key_labels,
    num_classes: int,
    k: int = 1,
    temperature=None,
    key_mask=None,
):
    """k-nearest-neighbour class vote by cosine similarity.

    With `temperature=None` each of the `k` neighbours casts one vote
    (SemPPL's k-NN). With a temperature, votes are weighted by
    `exp(sim / temperature)` (the weighted k-NN monitor of InstDisc / DINO).

    Args:
        queries: tensor `(N, D)`.
        keys: tensor `(M, D)`, `M >= k`.
        key_labels: int tensor `(M,)`.
        num_classes: int. Number of classes.
        k: int. Number of neighbours. Defaults to `1`.
        temperature: optional float > 0. Defaults to `None` (uniform votes).
        key_mask: optional bool tensor `(M,)`; keys where it is `False`
            never become neighbours (empty queue slots).

    Returns:
        A float tensor `(N, num_classes)` of votes; its argmax is the
        prediction.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    if temperature is not None:
        check_positive("temperature", temperature)
    sims = cosine_similarity_matrix(queries, keys)
    if key_mask is not None:
        sims = ops.where(key_mask[None, :], sims, -3.0)
    top_sims, top_idx = ops.top_k(sims, k=k)
    valid = None if key_mask is None else ops.take(key_mask, top_idx, axis=0)
    return neighbour_votes(
        top_sims,
        ops.take(key_labels, top_idx, axis=0),
        num_classes,
        temperature,
        valid,
    )
