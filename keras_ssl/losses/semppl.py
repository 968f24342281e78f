"""SemPPL's loss: augmentation and semantic positives with RELICv2 terms.

Besides the loss (`semppl`, `SemPPL`), this module holds the pure math the
loss's inputs come from: negatives (`sample_negative_indices`), pseudo-labels
(`view_voting`, `majority_vote`, `pseudo_labels`), semantic positives
(`sample_semantic_positive_indices`, `semantic_positives`), the global order
of a replica's images (`global_anchor_indices`) and the pseudo-label
monitors (`pseudo_label_quality`). They take their random numbers as
arguments, so a caller can draw them once for the global batch (the same on
every replica) and a test can fix them.
"""

import math
from typing import NamedTuple

import keras
from keras import ops

from keras_ssl._checks import check_non_negative
from keras_ssl._checks import check_positive
from keras_ssl._checks import check_positive_int
from keras_ssl.losses._loss import PredictionsOnlyLoss
from keras_ssl.ops.math import knn_vote
from keras_ssl.ops.math import l2_normalize
from keras_ssl.ops.math import loss_dtype


def _check_scales(temperature, alpha, invariance_scale, contrastive_scale):
    check_positive("temperature", temperature)
    check_non_negative("alpha", alpha)
    check_non_negative("invariance_scale", invariance_scale)
    check_non_negative("contrastive_scale", contrastive_scale)


def _as_list(x, name):
    if x is None:
        return []
    if not isinstance(x, (list, tuple)):
        raise ValueError(
            f"`{name}` must be a list of tensors, one per view. Received: "
            f"{type(x).__name__}"
        )
    return list(x)


def _log_probs(anchor, positives, negatives, scale):
    """`log p(anchor; positive)` over `[positive, negatives]` (eqs. 5-6).

    `phi(a, b) = tau * exp(<a, b> / tau)`: the factor `tau` is the same in
    every term of the ratio, so the distribution is a softmax of
    `<a, b> / tau` over the candidates, positive first.

    Args:
        anchor: `(B, D)`.
        positives: `(B, D)` or `(B, P, D)`.
        negatives: `(B, N, D)`.
        scale: `1 / tau`.

    Returns:
        `(B, 1 + N)` or `(B, P, 1 + N)` log-probabilities.
    """
    negative_logits = ops.einsum("bd,bnd->bn", anchor, negatives) * scale
    if len(positives.shape) == 2:
        positive_logit = ops.sum(anchor * positives, axis=-1) * scale
        logits = ops.concatenate(
            [positive_logit[:, None], negative_logits], axis=-1
        )
    else:
        positive_logit = ops.einsum("bd,bpd->bp", anchor, positives) * scale
        repeated = ops.repeat(
            negative_logits[:, None, :], ops.shape(positives)[1], axis=1
        )
        logits = ops.concatenate([positive_logit[..., None], repeated], -1)
    return ops.log_softmax(logits, axis=-1)


def _kl(log_p, log_q):
    """Appendix B: `sg[E_p log p] - E_p log q` over the last axis.

    Written as the paper writes it: only the entropy term is under the
    stop-gradient, so gradients reach both distributions through
    `E_p log q`. Its value is `D_KL(p || q)`.
    """
    p = ops.exp(log_p)
    return ops.stop_gradient(ops.sum(p * log_p, axis=-1)) - ops.sum(
        p * log_q, axis=-1
    )


class _Inputs(NamedTuple):
    """The loss's tensors (the arguments of `semppl`, the keys of a
    `SemPPL` `y_pred`); `_prepare` checks, casts and l2-normalises them
    and sets `dtype`."""

    online_large: list
    target_large: list
    negative_indices: object
    online_small: list = None
    semantic_positives: list = None
    semantic_mask: object = None
    anchor_indices: object = None
    dtype: str = None


def _prepare(inputs):
    online_large = _as_list(inputs.online_large, "online_large")
    target_large = _as_list(inputs.target_large, "target_large")
    online_small = _as_list(inputs.online_small, "online_small")
    semantic_positives = _as_list(
        inputs.semantic_positives, "semantic_positives"
    )
    semantic_mask = inputs.semantic_mask
    anchor_indices = inputs.anchor_indices
    if not online_large or len(online_large) != len(target_large):
        raise ValueError(
            "`online_large` and `target_large` must hold one tensor per "
            "large view, at least one. Received: "
            f"{len(online_large)} online and {len(target_large)} target views"
        )
    if semantic_positives and len(semantic_positives) != len(target_large):
        raise ValueError(
            "`semantic_positives` must hold one `(B, P, D)` tensor per large "
            f"view. Received: {len(semantic_positives)} tensors for "
            f"{len(target_large)} large views"
        )
    dtype = loss_dtype(ops.convert_to_tensor(online_large[0]))

    def normalized(x):
        return l2_normalize(ops.cast(ops.convert_to_tensor(x), dtype))

    batch = ops.shape(online_large[0])[0]
    if anchor_indices is None:
        anchor_indices = ops.arange(batch, dtype="int32")
    if semantic_positives and semantic_mask is None:
        semantic_mask = ops.ones((batch,), dtype)
    # Targets and queue entries carry no gradient (the target network is an
    # EMA, the queue is state): stopping it here makes that explicit.
    return _Inputs(
        online_large=[normalized(x) for x in online_large],
        target_large=[ops.stop_gradient(normalized(x)) for x in target_large],
        negative_indices=ops.cast(inputs.negative_indices, "int32"),
        online_small=[normalized(x) for x in online_small],
        semantic_positives=[
            ops.stop_gradient(normalized(x)) for x in semantic_positives
        ],
        semantic_mask=(
            ops.cast(semantic_mask, dtype) if semantic_positives else None
        ),
        anchor_indices=ops.cast(anchor_indices, "int32"),
        dtype=dtype,
    )


def _contrastive_terms(x, scale):
    """Eqs. (8)-(9) per anchor, and the log-probabilities of large anchors.

    Returns `(augmentation, semantic, log_p_aug, log_p_sem)`: the first two
    `(B,)` sums over view pairs (and semantic positives), the last two
    dicts from `(anchor view i, target view j)` of large views to the
    `_log_probs` the KL terms compare.
    """
    num_large = len(x.online_large)
    # Target view j: each anchor's own projection and its negatives.
    positives = [ops.take(t, x.anchor_indices, axis=0) for t in x.target_large]
    negatives = [
        ops.take(t, x.negative_indices, axis=0) for t in x.target_large
    ]
    augmentation = semantic = 0.0
    log_p_aug, log_p_sem = {}, {}
    for i, anchor in enumerate(x.online_large + x.online_small):
        for j in range(num_large):
            log_p = _log_probs(anchor, positives[j], negatives[j], scale)
            augmentation = augmentation - log_p[:, 0]
            if i < num_large:
                log_p_aug[i, j] = log_p
            if not x.semantic_positives:
                continue
            log_s = _log_probs(
                anchor, x.semantic_positives[j], negatives[j], scale
            )
            semantic = semantic - x.semantic_mask * ops.sum(
                log_s[..., 0], axis=-1
            )
            if i < num_large:
                log_p_sem[i, j] = log_s
    return augmentation, semantic, log_p_aug, log_p_sem


def _invariance_terms(log_p_aug, log_p_sem, num_large, semantic_mask):
    """Appendix B's KL terms per anchor, summed over distinct view pairs.

    The KL terms compare anchor view i against target view j with the
    swapped pair (j, i): both views must go through both networks, so only
    pairs of distinct large views have them.
    """
    invariance = 0.0
    for i in range(num_large):
        for j in range(num_large):
            if i == j:
                continue
            invariance = invariance + _kl(log_p_aug[i, j], log_p_aug[j, i])
            if log_p_sem:
                kl = ops.sum(_kl(log_p_sem[i, j], log_p_sem[j, i]), axis=-1)
                invariance = invariance + semantic_mask * kl
    return invariance


def _per_anchor_terms(inputs, temperature):
    """Per-anchor sums of the three kinds of terms, and the normaliser.

    Takes `semppl`'s tensors (`_Inputs`) and `temperature`.
    Returns `(augmentation, semantic, invariance, normaliser)`, the first
    three `(B,)`: eq. (9) summed over view pairs, eq. (8) summed over view
    pairs and semantic positives (zero for anchors without one), and the
    Appendix B KL terms of both kinds summed over pairs of distinct large
    views.
    """
    x = _prepare(inputs)
    scale = ops.cast(1.0 / temperature, x.dtype)
    augmentation, semantic, log_p_aug, log_p_sem = _contrastive_terms(x, scale)
    num_large = len(x.online_large)
    invariance = _invariance_terms(
        log_p_aug, log_p_sem, num_large, x.semantic_mask
    )
    num_semantic = (
        int(x.semantic_positives[0].shape[1]) if x.semantic_positives else 0
    )
    normaliser = (
        (num_large + len(x.online_small)) * num_large * (1 + num_semantic)
    )
    zeros = ops.zeros_like(augmentation)
    return augmentation, semantic + zeros, invariance + zeros, normaliser


def semppl(
    online_large,
    target_large,
    negative_indices,
    online_small=None,
    semantic_positives=None,
    semantic_mask=None,
    anchor_indices=None,
    temperature: float = 0.2,
    alpha: float = 0.2,
    invariance_scale: float = 5.0,
    contrastive_scale: float = 0.3,
    return_metrics: bool = False,
):
    """SemPPL's loss (eq. 10) over all view pairs, averaged over anchors.

    For every anchor view `i` (the large views, then the small views, all
    through the online network: pseudo-code lines 25-52) and every large
    target view `j`, it adds
    `c * (l_augm(i, j) + alpha * sum_s l_sempos(i, j, s))
    + lambda * (I_augm(i, j) + sum_s I_sempos(i, j, s))`, and divides by
    the pseudo-code's count `(L + S) * L * (1 + P)` (line 54), where `L`,
    `S` and `P` are the numbers of large views, small views and semantic
    positives. Each term is the mean over the anchors `m` of the batch.

    - `l_augm(i, j) = -log p(z_m^i; z_{m,t}^j)` (eqs. 1, 9): the online
      prediction of view `i` against the target projection of view `j` of
      the same image, contrasted with `N` negatives, the target projections
      of view `j` of other images of the batch. `p` is eq. (6) with
      `phi(a, b) = tau * exp(<a, b> / tau)` on l2-normalised vectors.
    - `l_sempos(i, j, s) = -log p(z_m^i; z_{s,t}^{j,+})` (eqs. 3, 8): the
      same with semantic positive `s` (a queue entry of view `j`) in place
      of the augmentation positive, and the same negatives.
    - `I_augm(i, j) = KL(p(z_m^i; z_{m,t}^j) || p(z_m^j; z_{m,t}^i))` and
      `I_sempos(i, j, s) = KL(p(z_m^i; z_{s,t}^{j,+}) ||
      p(z_m^j; z_{s,t}^{i,+}))` (Appendix B): each a KL between two
      distributions over the same `1 + N` candidates (the positive, then the
      same negatives), computed as `sg[E_p log p] - E_p log q` as written.

    Choices the paper leaves open, made here:
    - Pairs with `i == j` (a large view against its own target) are in the
      contrastive sums, as in the pseudo-code's double loop over large views
      (whose normaliser counts `L` target views per anchor view). They have
      no KL term: both of its distributions would be the same.
    - Small anchor views have no KL term: the swapped distribution needs
      the target projection of the small view, which the pseudo-code never
      computes ("small views only go through the online network").
    - Appendix B writes `I_sempos` with `z_m^{a2,+}` (an online prediction
      of the semantic positive), which a queue of target projections cannot
      provide. Here the swapped distribution puts view `j`'s online
      prediction of the anchor against view `i`'s queue entry for the
      *same* slot: SemPPL's per-view queues are filled in lockstep, so a
      slot holds the same labeled image in every view's queue.
    - Semantic positives are summed over `s` inside the pair, then weighted
      by `alpha`: Appendix D.2 notes that the best `alpha` (0.2) is close to
      `1 / P`, i.e. `alpha` normalises a sum over the `P` positives.
    - An anchor whose `semantic_mask` is `False` (its label has no entry in
      the queue) contributes 0 to the semantic terms; the batch mean still
      divides by all anchors, which keeps the loss of a batch split across
      replicas equal to the loss of the whole batch.
    - The batch sums of eqs. (1), (3) are means here (scale-free in the
      batch size, as `keras_ssl.losses.nt_xent`).

    Under `tf.distribute` give this replica's anchors and the *global*
    target projections (with `anchor_indices` pointing at each anchor's own
    row); the result is then the mean over this replica's anchors, to be
    scaled by `1 / num_replicas` once (`keras_ssl.losses.SemPPL` does it).

    Args:
        online_large: list of `L` tensors `(B, D)`. Online predictions
            `h(g(f(x)))` of the large views.
        target_large: list of `L` tensors `(G, D)`. Target projections
            `g_t(f_t(x))` of the large views of the batch (`G >= B`: the
            global batch under `tf.distribute`).
        negative_indices: int tensor `(B, N)`. Rows of `target_large` that
            are each anchor's negatives (e.g. `sample_negative_indices`).
        online_small: optional list of `S` tensors `(B, D)`. Online
            predictions of the small views. Defaults to `None`.
        semantic_positives: optional list of `L` tensors `(B, P, D)`. Queue
            entries of each large view sampled as semantic positives (e.g.
            at `sample_semantic_positive_indices`). Defaults to `None` (no
            semantic terms).
        semantic_mask: optional bool tensor `(B,)`. Anchors that have
            semantic positives. Defaults to all `True`.
        anchor_indices: optional int tensor `(B,)`. Row of `target_large`
            holding each anchor's own target projection. Defaults to
            `arange(B)`.
        temperature: float > 0. `tau`. Defaults to `0.2`.
        alpha: float >= 0. Weight of the semantic-positive loss. Defaults
            to `0.2` (Appendix D.1: "alpha = 1/5").
        invariance_scale: float >= 0. `lambda` of eq. (10). Defaults to
            `5.0`.
        contrastive_scale: float >= 0. `c` of eq. (10). Defaults to `0.3`.
        return_metrics: bool. Also return a dict with
            `"augmentation_loss"`, `"semantic_loss"` and
            `"invariance_loss"`, normalised like the loss, so that
            `loss = c * (augmentation_loss + alpha * semantic_loss) +
            lambda * invariance_loss`. Defaults to `False`.

    Returns:
        The scalar loss, or `(loss, metrics)` when `return_metrics`.

    Example:
    ```python
    from keras_ssl.losses.semppl import sample_negative_indices

    online = [keras.random.normal((8, 16)) for _ in range(2)]
    target = [keras.random.normal((8, 16)) for _ in range(2)]
    negatives = sample_negative_indices(
        keras.random.uniform((8, 8)), keras.ops.arange(8), num_negatives=5
    )
    loss = keras_ssl.losses.semppl(online, target, negatives)
    ```

    References:
        - [Bošnjak et al., 2023. SemPPL: Predicting Pseudo-Labels for
          Better Contrastive Representations](https://arxiv.org/abs/2301.05158)
        - [Tomasev et al., 2022. Pushing the limits of self-supervised
          ResNets (RELICv2)](https://arxiv.org/abs/2201.05119)
    """
    _check_scales(temperature, alpha, invariance_scale, contrastive_scale)
    inputs = _Inputs(
        online_large,
        target_large,
        negative_indices,
        online_small,
        semantic_positives,
        semantic_mask,
        anchor_indices,
    )
    augmentation, semantic, invariance, normaliser = _per_anchor_terms(
        inputs, temperature
    )
    parts = {
        "augmentation_loss": ops.mean(augmentation) / normaliser,
        "semantic_loss": ops.mean(semantic) / normaliser,
        "invariance_loss": ops.mean(invariance) / normaliser,
    }
    loss = (
        contrastive_scale
        * (parts["augmentation_loss"] + alpha * parts["semantic_loss"])
        + invariance_scale * parts["invariance_loss"]
    )
    if return_metrics:
        return loss, parts
    return loss


# Keys of a dict `y_pred` for `SemPPL`.
_REQUIRED_KEYS = ("online_large", "target_large", "negative_indices")
_OPTIONAL_KEYS = (
    "online_small",
    "semantic_positives",
    "semantic_mask",
    "anchor_indices",
)


@keras.saving.register_keras_serializable(package="keras_ssl")
class SemPPL(PredictionsOnlyLoss):
    """SemPPL's loss (eq. 10) as a `keras.losses.Loss`.

    The math is `keras_ssl.losses.semppl()`'s (see there for every term
    and for the choices the paper leaves open); this class returns the
    per-anchor values so that Keras's `reduction`, `sample_weight` and its
    `1 / num_replicas` scaling under `tf.distribute` apply. The loss holds
    no state: the queue's semantic positives and the sampled negatives are
    passed in on every call.

    `y_true` is ignored (pass `None`). `y_pred` is a dict with keys
    `"online_large"`, `"target_large"`, `"negative_indices"` and optionally
    `"online_small"`, `"semantic_positives"`, `"semantic_mask"`,
    `"anchor_indices"`, the arguments of `keras_ssl.losses.semppl`.

    Args:
        temperature: float > 0. `tau`. Defaults to `0.2`.
        alpha: float >= 0. Weight of the semantic positives. Defaults to
            `0.2`.
        invariance_scale: float >= 0. `lambda`. Defaults to `5.0`.
        contrastive_scale: float >= 0. `c`. Defaults to `0.3`.
        reduction: str. Keras loss reduction. Defaults to
            `"sum_over_batch_size"` (the mean over anchors).
        name: str. Defaults to `"semppl"`.
        dtype: optional dtype of the loss computation. Defaults to `None`.

    Example:
    ```python
    from keras_ssl.losses.semppl import sample_negative_indices

    loss_fn = keras_ssl.losses.SemPPL()
    online = [keras.random.normal((8, 16)) for _ in range(2)]
    target = [keras.random.normal((8, 16)) for _ in range(2)]
    negatives = sample_negative_indices(
        keras.random.uniform((8, 8)), keras.ops.arange(8), num_negatives=5
    )
    loss = loss_fn(
        None,
        {"online_large": online, "target_large": target,
         "negative_indices": negatives},
    )
    ```

    References:
        - [Bošnjak et al., 2023. SemPPL: Predicting Pseudo-Labels for
          Better Contrastive Representations](https://arxiv.org/abs/2301.05158)
    """

    config_args = (
        "temperature",
        "alpha",
        "invariance_scale",
        "contrastive_scale",
    )

    def __init__(
        self,
        temperature: float = 0.2,
        alpha: float = 0.2,
        invariance_scale: float = 5.0,
        contrastive_scale: float = 0.3,
        reduction: str = "sum_over_batch_size",
        name: str = "semppl",
        dtype=None,
    ):
        _check_scales(temperature, alpha, invariance_scale, contrastive_scale)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = temperature
        self.alpha = alpha
        self.invariance_scale = invariance_scale
        self.contrastive_scale = contrastive_scale

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, dict):
            raise ValueError(
                "`y_pred` must be a dict with keys "
                f"{list(_REQUIRED_KEYS)} (and optionally "
                f"{list(_OPTIONAL_KEYS)}). Received: {type(y_pred).__name__}"
            )
        keys = set(y_pred)
        unknown = keys - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS)
        if unknown or not set(_REQUIRED_KEYS) <= keys:
            raise ValueError(
                f"A dict `y_pred` needs keys {list(_REQUIRED_KEYS)} and may "
                f"have {list(_OPTIONAL_KEYS)}. Received keys: {sorted(keys)}"
            )
        augmentation, semantic, invariance, normaliser = _per_anchor_terms(
            _Inputs(**y_pred), self.temperature
        )
        per_anchor = (
            self.contrastive_scale * (augmentation + self.alpha * semantic)
            + self.invariance_scale * invariance
        ) / normaliser
        return ops.cast(per_anchor, self.dtype)


def sample_negative_indices(noise, anchor_indices, num_negatives: int = 10):
    """`num_negatives` distinct rows per anchor, uniformly, never itself.

    SemPPL §2: negatives are "randomly uniformly sampled from the current
    batch" (10 per anchor, Appendix D.1). The anchor's own row is excluded
    (it is the positive) and the rows are distinct: the top `num_negatives`
    of i.i.d. uniform noise over the other rows is a uniformly random
    subset of them, with static shapes (XLA-friendly).

    Args:
        noise: float tensor `(B, G)` of i.i.d. uniform numbers in [0, 1),
            one row per anchor over the `G` candidate rows. Draw it for the
            global batch and take each replica's rows, so that the sample
            does not depend on how the batch is split.
        anchor_indices: int tensor `(B,)`. The anchor's own row.
        num_negatives: int, `1 <= num_negatives < G`. Defaults to `10`.

    Returns:
        An int32 tensor `(B, num_negatives)`.
    """
    check_positive_int("num_negatives", num_negatives)
    noise = ops.convert_to_tensor(noise)
    candidates = noise.shape[-1]
    if candidates is not None and num_negatives >= candidates:
        raise ValueError(
            "`num_negatives` must be smaller than the number of images in "
            f"the (global) batch, {candidates}. Received: "
            f"num_negatives={num_negatives}"
        )
    columns = ops.arange(ops.shape(noise)[-1], dtype="int32")
    is_self = ops.equal(
        columns[None, :], ops.cast(anchor_indices, "int32")[:, None]
    )
    # Uniform noise is in [0, 1): -1 ranks the anchor itself last.
    scores = ops.where(is_self, ops.cast(-1.0, noise.dtype), noise)
    _, indices = ops.top_k(scores, k=num_negatives)
    return ops.cast(indices, "int32")


def sample_semantic_positive_indices(
    uniform, anchor_labels, queue_labels, queue_valid, num_classes: int
):
    """Queue slots drawn uniformly among those sharing each anchor's label.

    SemPPL §2: "we uniformly sample over all the embeddings in Q that share
    the same (pseudo-) label as x_m". Each of the `P` draws per anchor is
    independent (with replacement, like the pseudo-code's `sample()` call
    per positive), so any anchor whose label has at least one valid entry
    gets `P` positives. Slots that were never written (`queue_valid` False)
    are never drawn, whatever label they hold.

    How (no data-dependent shapes, `O(C log C + B·P)`): the valid slots are
    sorted by label, so each class's slots are one contiguous run; draw `r`
    is the `floor(u · count)`-th slot of the anchor's run.

    Args:
        uniform: float tensor `(B, P)` of i.i.d. uniform numbers in [0, 1).
        anchor_labels: int tensor `(B,)`: ground-truth or pseudo-labels, in
            `[0, num_classes)`.
        queue_labels: int tensor `(C,)`.
        queue_valid: bool tensor `(C,)`.
        num_classes: int >= 1.

    Returns:
        `(slots, has_positive)`: int32 `(B, P)` slot indices (0, and not to
        be used, where the anchor has none) and bool `(B,)`.
    """
    queue_labels = ops.cast(queue_labels, "int32")
    anchor_labels = ops.cast(anchor_labels, "int32")
    # Invalid slots get the extra class `num_classes`, sorted last.
    keys = ops.where(ops.cast(queue_valid, "bool"), queue_labels, num_classes)
    order = ops.cast(ops.argsort(keys), "int32")
    counts = ops.segment_sum(
        ops.ones_like(keys), keys, num_segments=num_classes + 1
    )[:num_classes]
    offsets = ops.cumsum(counts) - counts
    count = ops.take(counts, anchor_labels, axis=0)
    offset = ops.take(offsets, anchor_labels, axis=0)
    uniform = ops.convert_to_tensor(uniform)
    rank = ops.cast(
        ops.floor(uniform * ops.cast(count, uniform.dtype)[:, None]), "int32"
    )
    # Guards u == 1 by rounding, and keeps anchors without entries in range.
    rank = ops.clip(rank, 0, ops.maximum(count - 1, 0)[:, None])
    position = ops.minimum(offset[:, None] + rank, ops.shape(keys)[0] - 1)
    slots = ops.take(order, position, axis=0)
    has_positive = count > 0
    return ops.where(has_positive[:, None], slots, 0), has_positive


def view_voting(
    online_large, queues, queue_labels, queue_valid, num_classes, k=1
):
    """Pseudo-label votes of SemPPL's view voting (§2.1, Appendix D.2).

    "We build a single k-NN instance per augmentation a queried with all
    the augmentations": each large view's online prediction is matched
    against each large view's queue by cosine similarity, `|a|^2` k-NN
    lookups of `k` uniform votes each (eq. 2), summed per class. Slots with
    `queue_valid` False never vote.

    Args:
        online_large: list of `L` tensors `(B, D)`. Online predictions.
        queues: list of `L` tensors `(C, D)`. Each large view's queue.
        queue_labels: int tensor `(C,)`. Labels of the slots (the same for
            every view's queue, which are filled in lockstep).
        queue_valid: bool tensor `(C,)`.
        num_classes: int >= 1.
        k: int >= 1. Neighbours per lookup. Defaults to `1`.

    Returns:
        A float tensor `(B, num_classes)` of vote counts.
    """
    batch = ops.shape(online_large[0])[0]
    queries = ops.concatenate(list(online_large), axis=0)
    votes = 0.0
    for queue in queues:
        # One lookup per queue for all query views at once.
        v = knn_vote(
            queries,
            queue,
            queue_labels,
            num_classes,
            k=k,
            key_mask=ops.cast(queue_valid, "bool"),
        )
        votes = votes + ops.sum(
            ops.reshape(v, (len(online_large), batch, num_classes)), axis=0
        )
    return votes


def majority_vote(votes):
    """The class with most votes; ties go to the lowest class id.

    Eq. (2) takes the mode; the paper does not say how ties are broken.
    `argmax` does not promise which maximum it returns, so every class's
    count is lowered by less than one vote in proportion to its id, which
    makes the maximum unique without reordering unequal counts.

    Args:
        votes: float tensor `(B, K)` of (integer) vote counts.

    Returns:
        An int32 tensor `(B,)`.
    """
    num_classes = votes.shape[-1]
    penalty = ops.arange(num_classes, dtype=votes.dtype) / (2.0 * num_classes)
    return ops.cast(ops.argmax(votes - penalty[None, :], axis=-1), "int32")


def pseudo_labels(
    online_unlabeled, queues, queue_labels, queue_valid, num_classes, k=1
):
    """Pseudo-labels by view voting (§2.1), and the votes they come from.

    Args:
        online_unlabeled: list of `L` tensors `(U, D)`. Online predictions
            of the large views of the unlabeled images.
        queues: list of `L` tensors `(C, D)`. Each large view's queue.
        queue_labels: int tensor `(C,)`.
        queue_valid: bool tensor `(C,)`.
        num_classes: int >= 1.
        k: int >= 1. Neighbours per lookup. Defaults to `1`.

    Returns:
        `(labels, votes)`: the int32 `(U,)` majority vote (ties to the
        lowest class id) and the float `(U, num_classes)` vote counts.
    """
    votes = view_voting(
        online_unlabeled, queues, queue_labels, queue_valid, num_classes, k=k
    )
    return majority_vote(votes), votes


def semantic_positives(
    uniform, anchor_labels, queues, queue_labels, queue_valid, num_classes
):
    """Each anchor's semantic positives in every large view's queue (§2).

    The slots are drawn once (`sample_semantic_positive_indices`) and read
    from every view's queue: the queues are filled in lockstep, so a slot
    holds the same labeled image in all of them.

    Args:
        uniform: float tensor `(B, P)` of i.i.d. uniform numbers in [0, 1).
        anchor_labels: int tensor `(B,)`. Labels or pseudo-labels.
        queues: list of `L` tensors `(C, D)`. Each large view's queue.
        queue_labels: int tensor `(C,)`.
        queue_valid: bool tensor `(C,)`.
        num_classes: int >= 1.

    Returns:
        `(positives, has_positive)`: a list of `L` tensors `(B, P, D)` and
        a bool `(B,)`, as `semppl`'s `semantic_positives` and
        `semantic_mask`.
    """
    slots, has_positive = sample_semantic_positive_indices(
        uniform, anchor_labels, queue_labels, queue_valid, num_classes
    )
    return [ops.take(q, slots, axis=0) for q in queues], has_positive


def global_anchor_indices(num_unlabeled, num_labeled, replica, num_replicas):
    """Row of each of a replica's images in the global batch.

    The global batch holds every replica's unlabeled images, replica by
    replica, then every replica's labeled images: samples drawn for its
    rows do not depend on how the batch is split over replicas.

    Args:
        num_unlabeled: int. Unlabeled images per replica (may be 0).
        num_labeled: int. Labeled images per replica.
        replica: int scalar tensor. This replica's id.
        num_replicas: int. Replicas in sync.

    Returns:
        An int32 tensor `(num_unlabeled + num_labeled,)`, unlabeled first.
    """
    replica = ops.cast(replica, "int32")
    labeled = (
        num_replicas * num_unlabeled
        + replica * num_labeled
        + ops.arange(num_labeled, dtype="int32")
    )
    if not num_unlabeled:
        return labeled
    unlabeled = replica * num_unlabeled + ops.arange(
        num_unlabeled, dtype="int32"
    )
    return ops.concatenate([unlabeled, labeled], axis=0)


# Voting thresholds of Fig. 3, as percentages of the votes one image gets.
VOTE_FRACTIONS = (25, 50, 75, 100)


def pseudo_label_quality(votes, true_labels, votes_per_image):
    """Fig. 3's precision and recall at voting thresholds, and accuracy.

    For each threshold `f` of `VOTE_FRACTIONS` (a percentage of the
    `votes_per_image` an image gets), `pseudo_label_precision_f` is the
    accuracy of the pseudo-labels whose top class has at least
    `ceil(f * votes_per_image / 100)` votes, and `pseudo_label_recall_f`
    the fraction of all images that reach the threshold *and* are right.

    Args:
        votes: float tensor `(U, K)` of vote counts (`view_voting`).
        true_labels: int tensor `(U,)`. Held-out labels, for monitoring.
        votes_per_image: int. `L^2 * k`.

    Returns:
        A dict from metric name to `(ratio, count)`: each ratio with the
        count it is a ratio of, so that means over batches and replicas
        can weight by it.
    """
    votes = ops.stop_gradient(votes)
    correct = ops.cast(
        ops.equal(majority_vote(votes), ops.cast(true_labels, "int32")),
        "float32",
    )
    total = ops.cast(ops.shape(correct)[0], "float32")
    metrics = {"pseudo_label_accuracy": (ops.mean(correct), total)}
    top = ops.max(votes, axis=-1)
    for fraction in VOTE_FRACTIONS:
        threshold = max(1, math.ceil(fraction * votes_per_image / 100))
        confident = ops.cast(top >= threshold, "float32")
        count = ops.sum(confident)
        hits = ops.sum(confident * correct)
        metrics[f"pseudo_label_precision_{fraction}"] = (
            hits / ops.maximum(count, 1.0),
            count,
        )
        metrics[f"pseudo_label_recall_{fraction}"] = (hits / total, total)
    return metrics
