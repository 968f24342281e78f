"""SimCLR's NT-Xent contrastive loss, with negatives from every replica."""

import keras
from keras import ops

from keras_ssl import distribute
from keras_ssl._checks import check_positive
from keras_ssl.losses._loss import PredictionsOnlyLoss
from keras_ssl.ops.math import MASKED_LOGIT
from keras_ssl.ops.math import l2_normalize
from keras_ssl.ops.math import loss_dtype


def _differ(a, b) -> bool:
    """Whether two static dims are both known and different."""
    return a is not None and b is not None and a != b


def _check_shapes(z1, z2, negatives, negatives_mask) -> None:
    # Static checks only: dimensions unknown at trace time pass through.
    if len(z1.shape) != 2 or len(z2.shape) != 2:
        raise ValueError(
            "`z1` and `z2` must have rank 2 (batch, projection dim). "
            f"Received: z1.shape={tuple(z1.shape)}, "
            f"z2.shape={tuple(z2.shape)}"
        )
    if any(_differ(a, b) for a, b in zip(z1.shape, z2.shape)):
        raise ValueError(
            "`z1` and `z2` must have the same shape (the two views of "
            f"the same images). Received: z1.shape={tuple(z1.shape)}, "
            f"z2.shape={tuple(z2.shape)}"
        )
    if negatives is None:
        if negatives_mask is not None:
            raise ValueError("`negatives_mask` was given without `negatives`.")
        return
    dim = z1.shape[-1]
    if len(negatives.shape) != 2:
        raise ValueError(
            "`negatives` must have rank 2 (queue size, projection dim). "
            f"Received: negatives.shape={tuple(negatives.shape)}"
        )
    queue_dim = negatives.shape[-1]
    if _differ(dim, queue_dim):
        raise ValueError(
            "The last dim of `negatives` (the queue dim) must equal the "
            f"projection dim of `z1` and `z2`. Received: queue dim="
            f"{queue_dim}, projection dim={dim}"
        )
    if negatives_mask is None:
        return
    # (Q,) for every anchor alike, or (B, Q) row by row of the local batch.
    rank = len(negatives_mask.shape)
    expected = (z1.shape[0], negatives.shape[0])[-rank:] if rank else ()
    if rank not in (1, 2) or any(
        _differ(a, b) for a, b in zip(negatives_mask.shape, expected)
    ):
        raise ValueError(
            "`negatives_mask` must have shape (queue size,) or (batch, "
            "queue size). Received: "
            f"negatives_mask.shape={tuple(negatives_mask.shape)}, "
            f"z1.shape={tuple(z1.shape)}, "
            f"negatives.shape={tuple(negatives.shape)}"
        )


def _contrastive_logits(z1, z2, temperature, negatives, negatives_mask):
    """Logits of every local anchor against every candidate, targets, and
    the positives' logits.

    Rows are the `2B` local anchors, view 1 first. Columns are
    `[other view (R*B) | same view (R*B) | negatives (Q)]`, with the keys
    gathered from all `R` replicas (replica 0's rows first). The positive
    of local anchor `i` sits in the first block at column
    `replica_id * B + i`; the anchor's own column in the second block is
    masked. The positives' logits `(2B,)` are also computed directly, as
    the dot product of each image's two local projections: picking them
    out of the `(2B, 2RB + Q)` logits would cost a gradient as large as
    the logits (with a 65,536-entry memory, a scatter into 34M entries).
    """
    dtype = loss_dtype(z1)
    a1 = l2_normalize(ops.cast(z1, dtype))
    a2 = l2_normalize(ops.cast(z2, dtype))
    # Gathering is differentiable (see `distribute.all_gather`), so every
    # replica's loss reaches every replica's projections.
    k1 = distribute.all_gather(a1)
    k2 = distribute.all_gather(a2)
    scale = ops.cast(1.0 / temperature, dtype)

    local = ops.shape(a1)[0]
    offset = ops.cast(distribute.replica_id(), "int32") * local
    positives = ops.arange(local, dtype="int32") + offset
    num_keys = ops.shape(k1)[0]
    is_self = ops.equal(
        positives[:, None], ops.arange(num_keys, dtype="int32")[None, :]
    )
    masked = ops.cast(MASKED_LOGIT, dtype)

    def anchor_rows(anchor, other_view, same_view):
        blocks = [
            ops.matmul(anchor, ops.transpose(other_view)) * scale,
            ops.where(
                is_self,
                masked,
                ops.matmul(anchor, ops.transpose(same_view)) * scale,
            ),
        ]
        if negatives is not None:
            queue = l2_normalize(ops.cast(negatives, dtype))
            block = ops.matmul(anchor, ops.transpose(queue)) * scale
            if negatives_mask is not None:
                keep = ops.cast(negatives_mask, "bool")
                if len(keep.shape) == 1:
                    keep = keep[None, :]
                block = ops.where(keep, block, masked)
            blocks.append(block)
        return ops.concatenate(blocks, axis=1)

    logits = ops.concatenate(
        [anchor_rows(a1, k2, k1), anchor_rows(a2, k1, k2)], axis=0
    )
    labels = ops.concatenate([positives, positives], axis=0)
    # Column `positives[i]` of the first block: k2's local rows are a2.
    positive = ops.sum(a1 * a2, axis=1) * scale
    return logits, labels, ops.concatenate([positive, positive], axis=0)


def _per_anchor_loss(logits, positive):
    # Eq. (1): -log(exp(s_pos) / sum_{k != i} exp(s_k)), stably.
    return ops.logsumexp(logits, axis=1) - positive


def _contrastive_metrics(logits, labels):
    logits = ops.stop_gradient(logits)
    predicted = ops.cast(ops.argmax(logits, axis=1), "int32")
    accuracy = ops.mean(ops.cast(ops.equal(predicted, labels), logits.dtype))
    log_probs = ops.log_softmax(logits, axis=1)
    entropy = -ops.sum(ops.exp(log_probs) * log_probs, axis=1)
    return {
        "contrastive_accuracy": accuracy,
        "contrastive_entropy": ops.mean(entropy),
    }


def _prepare(z1, z2, temperature, negatives, negatives_mask):
    """Logits, targets and positives of inputs checked here, for a
    `temperature` checked by the caller (once, by `nt_xent()` or
    `NTXent.__init__`)."""
    z1 = ops.convert_to_tensor(z1)
    z2 = ops.convert_to_tensor(z2)
    if negatives is not None:
        negatives = ops.convert_to_tensor(negatives)
    if negatives_mask is not None:
        negatives_mask = ops.convert_to_tensor(negatives_mask)
    _check_shapes(z1, z2, negatives, negatives_mask)
    return _contrastive_logits(z1, z2, temperature, negatives, negatives_mask)


def nt_xent(
    z1,
    z2,
    temperature: float = 0.1,
    negatives=None,
    negatives_mask=None,
    return_metrics: bool = False,
):
    """NT-Xent (SimCLR eq. 1) over both views, averaged over the anchors.

    Each of the `2B` local anchors (both views of this replica's `B`
    images) is contrasted with its other view (the positive) and with every
    other projection of both views of the *global* batch, gathered from all
    replicas, plus the optional extra `negatives` (the MoCo memory queue).
    Similarities are cosine similarities divided by `temperature`.

    Outside a multi-replica `tf.distribute` context (one device, or the JAX
    backend under a `jit` over the global batch) this is exactly eq. (1)
    averaged over all `2N` anchors. Under a `tf.distribute` strategy it is
    the mean over this replica's `2B` anchors, *not* divided by the number
    of replicas: scale it by `1 / num_replicas` once before taking
    gradients (which is what `keras_ssl.losses.NTXent` does through Keras's
    loss reduction); the sum of the scaled values over replicas is then the
    global eq. (1) mean and the summed gradients are its gradients.

    Args:
        z1: tensor `(B, D)`. Projections of the first view.
        z2: tensor `(B, D)`. Projections of the second view, row `i` the
            same image as row `i` of `z1`.
        temperature: float > 0. The temperature `tau`. Defaults to `0.1`
            (SimCLRv2's ImageNet value).
        negatives: optional tensor `(Q, D)`. Extra negatives for every
            anchor, e.g. `keras_ssl.layers.MemoryQueue.read()[0]`. They are
            l2-normalised here like the projections. Defaults to `None`.
        negatives_mask: optional bool tensor `(Q,)` or `(B, Q)`. Rows of
            `negatives` where it is `False` never enter the denominator:
            `(Q,)` for every anchor alike (empty queue slots), `(B, Q)` per
            image of this replica's batch, for both of its views (e.g. the
            keys of the image's own earlier views). Defaults to `None` (all
            rows count).
        return_metrics: bool. Also return a dict with
            `"contrastive_accuracy"` (fraction of anchors whose positive has
            the highest logit of all candidates) and
            `"contrastive_entropy"` (mean entropy, in nats, of each anchor's
            softmax over its candidates), both over the local anchors and
            without gradient. Defaults to `False`.

    Returns:
        The scalar loss, or `(loss, metrics)` when `return_metrics`.

    Example:
    ```python
    z1 = keras.random.normal((8, 128))
    z2 = keras.random.normal((8, 128))
    loss = keras_ssl.losses.nt_xent(z1, z2, temperature=0.1)
    queue = keras_ssl.layers.MemoryQueue(size=1024, dim=128)
    negatives, valid = queue.read()
    loss, metrics = keras_ssl.losses.nt_xent(
        z1, z2, negatives=negatives, negatives_mask=valid,
        return_metrics=True,
    )
    ```

    References:
        - [Chen et al., 2020. A Simple Framework for Contrastive Learning of
          Visual Representations](https://arxiv.org/abs/2002.05709)
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
    """
    check_positive("temperature", temperature)
    logits, labels, positive = _prepare(
        z1, z2, temperature, negatives, negatives_mask
    )
    loss = ops.mean(_per_anchor_loss(logits, positive))
    if return_metrics:
        return loss, _contrastive_metrics(logits, labels)
    return loss


@keras.saving.register_keras_serializable(package="keras_ssl")
class NTXent(PredictionsOnlyLoss):
    """NT-Xent contrastive loss (SimCLR eq. 1) as a `keras.losses.Loss`.

    Use it where a Keras loss object is wanted (`compile(loss=...)`, or a
    custom `train_step` that relies on Keras's reduction): its per-anchor
    values go through the usual `reduction` and `sample_weight`, including
    Keras's `1 / num_replicas` scaling under `tf.distribute`, so the value
    summed over replicas is the global mean and nothing must divide again.
    The math is `keras_ssl.losses.nt_xent`'s; see there for how the keys are
    gathered from every replica, and for the papers.

    `y_true` is ignored (pass `None`): the positives are defined by the
    pairing of the two views. `y_pred` is either
    - a tensor `(2B, D)`: the projections of view 1 stacked on those of
      view 2, row `i` and row `B + i` being the same image (what a model
      returning `concatenate([z1, z2])` gives `compile()`); or
    - a dict with keys `"z1"`, `"z2"` (each `(B, D)`) and optionally
      `"negatives"` `(Q, D)` and `"negatives_mask"` `(Q,)` or `(B, Q)`,
      to add extra negatives such as a memory queue. The loss holds no
      state: the queue is passed in on every call, never stored or updated
      here.

    The per-anchor losses are ordered view 1 first, so a `sample_weight`
    of shape `(2B,)` lines up with the stacked `y_pred`.

    Args:
        temperature: float > 0. The temperature `tau`. Defaults to `0.1`.
        reduction: str. Keras loss reduction. Defaults to
            `"sum_over_batch_size"`, the mean over the anchors as in the
            paper.
        name: str. Defaults to `"nt_xent"`.
        dtype: optional dtype of the loss computation. Defaults to `None`.

    Example:
    ```python
    loss_fn = keras_ssl.losses.NTXent(temperature=0.1)
    z1 = keras.random.normal((8, 128))
    z2 = keras.random.normal((8, 128))
    loss = loss_fn(None, keras.ops.concatenate([z1, z2], axis=0))
    queue = keras_ssl.layers.MemoryQueue(size=1024, dim=128)
    negatives, valid = queue.read()
    loss = loss_fn(
        None,
        {"z1": z1, "z2": z2, "negatives": negatives,
         "negatives_mask": valid},
    )
    ```

    """

    config_args = ("temperature",)

    def __init__(
        self,
        temperature: float = 0.1,
        reduction: str = "sum_over_batch_size",
        name: str = "nt_xent",
        dtype=None,
    ):
        check_positive("temperature", temperature)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        if isinstance(y_pred, dict):
            unknown = set(y_pred) - {"z1", "z2", "negatives", "negatives_mask"}
            if unknown or not {"z1", "z2"} <= set(y_pred):
                raise ValueError(
                    "A dict `y_pred` needs keys 'z1' and 'z2' and may have "
                    "'negatives' and 'negatives_mask'. Received keys: "
                    f"{sorted(y_pred)}"
                )
            z1, z2 = y_pred["z1"], y_pred["z2"]
            negatives = y_pred.get("negatives")
            negatives_mask = y_pred.get("negatives_mask")
        else:
            rows = y_pred.shape[0]
            if rows is not None and rows % 2:
                raise ValueError(
                    "`y_pred` must stack the two views' projections, so its "
                    f"first dim must be even. Received: y_pred.shape="
                    f"{tuple(y_pred.shape)}"
                )
            z1, z2 = ops.split(y_pred, 2, axis=0)
            negatives = negatives_mask = None
        logits, _, positive = _prepare(
            z1, z2, self.temperature, negatives, negatives_mask
        )
        return ops.cast(_per_anchor_loss(logits, positive), self.dtype)
