"""PAWS: predicting view assignments with a labeled support set.

The loss (eq. 4 of Assran et al., 2021) comes first, in its four steps:
soft nearest neighbours (eq. 1), sharpened targets (eq. 2), the
cross-entropy of every view against its target, and the ME-MAX
regulariser. The entry points, `paws()` and `PAWS`, follow; the checks
of their arguments and inputs come last.
"""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_ssl import distribute
from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_positive
from keras_ssl._checks import check_positive_int
from keras_ssl.losses._loss import ArgumentsLoss
from keras_ssl.ops.math import entropy
from keras_ssl.ops.math import loss_dtype
from keras_ssl.ops.math import sharpen
from keras_ssl.ops.math import soft_cross_entropy
from keras_ssl.ops.math import soft_nearest_neighbour


class _Settings(NamedTuple):
    """The hyper-parameters of eq. (4) that `paws` and `PAWS` share
    (`_check_settings` checks them)."""

    num_classes: int | None
    temperature: float
    sharpen_temperature: float
    label_smoothing: float
    target_threshold: float


def _paws_terms(
    views,
    support,
    support_labels,
    settings,
    target_views=None,
    target_support=None,
):
    """Per-anchor cross-entropies of eq. (4), `H(p_bar)` and the global
    views' targets, from inputs that `_checked_inputs` has seen and
    `_Settings`."""
    s = settings
    dtype = loss_dtype(views[0])
    batch = ops.shape(views[0])[0]
    labels = _support_targets(
        support_labels, s.num_classes, s.label_smoothing, dtype=dtype
    )
    # Step 1: soft nearest neighbours.
    probs = _classify(views, support, labels, s.temperature, dtype)
    # Step 2: sharpened targets, from the two global views.
    sharp = sharpen(probs, s.sharpen_temperature)
    if target_views is None:
        global_targets = sharp[: 2 * batch]
    else:
        # The reference code's targets: the global views' representations
        # before any prediction head, against the support's.
        global_targets = sharpen(
            _classify(
                target_views, target_support, labels, s.temperature, dtype
            ),
            s.sharpen_temperature,
        )
    # §3.2: "we only differentiate the cross-entropy loss terms with respect
    # to the predictions p_i and p_i^+, and not the sharpened targets".
    global_targets = ops.stop_gradient(global_targets)
    targets = _view_targets(
        global_targets, batch, len(views), s.target_threshold
    )
    # Step 3: the cross-entropy of every view's prediction.
    cross_entropy = soft_cross_entropy(targets, probs=probs)
    # Step 4: ME-MAX, the entropy of the mean sharpened prediction.
    mean_entropy = entropy(_global_mean(sharp))
    return cross_entropy, mean_entropy, global_targets


def _classify(views, support, labels, temperature, dtype):
    """Eq. (1) for the rows of every view, against the global support.

    Every replica classifies against the support batch of every replica;
    the gather is differentiable, so the support embeddings of every
    replica receive the gradient of every replica's anchors
    ("accommodation").
    """
    queries = ops.concatenate([ops.cast(v, dtype) for v in views], axis=0)
    keys = distribute.all_gather(ops.cast(support, dtype))
    return soft_nearest_neighbour(queries, keys, labels, temperature)


def _view_targets(global_targets, batch, num_views, threshold):
    """Eq. (4)'s target of every view's rows, from the two global ones."""
    t1, t2 = global_targets[:batch], global_targets[batch:]
    # Each global view targets the other one; each small view targets
    # the mean of the two global targets (§5, footnote 4).
    local = [0.5 * (t1 + t2)] * (num_views - 2)
    targets = ops.concatenate([t2, t1] + local, axis=0)
    if threshold:
        # As the reference code does ("numerical stability"): target
        # probabilities below the threshold count as 0, not renormalised.
        targets = ops.where(targets < threshold, 0.0, targets)
    return targets


def _global_mean(sharp):
    """`p_bar` of eq. (4): "the average of the sharpened predictions" of
    all views of all images, over the global batch. It is differentiated
    (otherwise ME-MAX would have no effect)."""
    total = distribute.all_reduce_sum(ops.sum(sharp, axis=0))
    count = ops.cast(
        ops.shape(sharp)[0] * distribute.num_replicas(), total.dtype
    )
    return total / count


def _support_targets(
    support_labels,
    num_classes=None,
    label_smoothing: float = 0.1,
    dtype="float32",
):
    """The smoothed label matrix `y_S` of the global support batch.

    Class ids become one-hot rows (hard rows pass as they are), gathered
    from every replica, then smoothed over the represented classes (see
    `paws`).
    """
    labels = ops.convert_to_tensor(support_labels)
    if len(labels.shape) == 1:
        if num_classes is None:
            raise ValueError(
                "`num_classes` is required when `support_labels` are class "
                "ids of shape (M,). Received: num_classes=None"
            )
        _check_class_ids(labels, num_classes)
        onehot = ops.one_hot(
            ops.cast(labels, "int32"), num_classes, dtype=dtype
        )
    elif len(labels.shape) == 2:
        width = labels.shape[-1]
        if None not in (num_classes, width) and width != num_classes:
            raise ValueError(
                "`support_labels` of shape (M, K) must have K == "
                f"num_classes. Received: support_labels.shape="
                f"{tuple(labels.shape)}, num_classes={num_classes}"
            )
        onehot = ops.cast(labels, dtype)
    else:
        raise ValueError(
            "`support_labels` must be class ids (M,) or label rows (M, K). "
            f"Received: support_labels.shape={tuple(labels.shape)}"
        )
    onehot = distribute.all_gather(onehot)
    if label_smoothing:
        present = ops.cast(ops.sum(onehot, axis=0) > 0, dtype)
        uniform = present / ops.maximum(ops.sum(present), 1.0)
        onehot = (1.0 - label_smoothing) * onehot + label_smoothing * uniform
    return onehot


def _metrics(cross_entropy, mean_entropy, global_targets):
    return {
        "cross_entropy": ops.stop_gradient(ops.mean(cross_entropy)),
        "me_max": ops.stop_gradient(mean_entropy),
        "target_confidence": ops.mean(ops.max(global_targets, axis=-1)),
    }


def paws(
    views,
    support,
    support_labels,
    num_classes: int | None = None,
    temperature: float = 0.1,
    sharpen_temperature: float = 0.25,
    label_smoothing: float = 0.1,
    me_max: bool = True,
    return_metrics: bool = False,
    target_views=None,
    target_support=None,
    target_threshold: float = 1e-4,
):
    """The PAWS objective, eq. (4) of Assran et al. (2021).

    Each view representation `z` is classified by the soft nearest-neighbour
    classifier `p = softmax(cos(z, z_S) / temperature) y_S` against the
    support representations `z_S` with (smoothed) labels `y_S`. The two
    global views target each other's *sharpened* prediction
    `rho(p) = p^(1/T) / sum(p^(1/T))`, every further (small) view targets
    the mean of the two global targets, and the targets get no gradient:

    `(1 / (V n)) sum_i [H(rho(p_i^1), p_i^2) + H(rho(p_i^2), p_i^1)
    + sum_{k>2} H((rho(p_i^1) + rho(p_i^2)) / 2, p_i^k)] - H(p_bar)`,

    where `p_bar` is, quoting Appendix A, "the average of the sharpened
    predictions" over all `V` views of all `n` images (§3.2 defines it the
    same way for two views). `-H(p_bar)` is the ME-MAX regulariser; it is
    differentiated through the sharpened predictions. The gradient reaches
    the support representations too (§3.2: backpropagating with respect to
    the support samples is "accommodation").

    Class ids are global (`K = num_classes` columns, as
    `keras_ssl.data.SupportSampler` yields them); label smoothing spreads
    over the classes *present in the support batch*, which gives exactly
    PAWS's values (it numbers each batch's classes `0..C-1`). As in the
    reference code, sharpened targets below `target_threshold` count as 0,
    and with a prediction head the targets come from the projections
    before it (`target_views`, `target_support`).

    Under a `tf.distribute` strategy pass this replica's rows: the support
    is gathered from every replica and `p_bar` is averaged over the global
    batch. The value is *not* divided by the number of replicas: scale it
    by `1 / num_replicas` once before taking gradients (as
    `keras_ssl.models.SSLModel` and `keras_ssl.losses.PAWS` do).
    docs/design.md ("PAWS") says why each of these choices was made.

    Args:
        views: list of `V >= 2` tensors `(B, D)`: the representations of
            the two global (large-crop) views first, then any small views;
            row `i` of each is the same image.
        support: tensor `(M, D)`. Representations of the support images
            (all their views), not yet normalised.
        support_labels: int tensor `(M,)` of class ids in
            `[0, num_classes)`, or `(M, K)` label rows (one-hot; pass
            `label_smoothing=0` for rows that are smoothed already).
        num_classes: optional int. `K`; required with class ids.
        temperature: float > 0. Cosine-similarity temperature `tau` of the
            classifier. Defaults to `0.1` (§5).
        sharpen_temperature: float > 0. Target sharpening temperature `T`.
            Defaults to `0.25` (§5).
        label_smoothing: float in [0, 1). Smoothing of the support labels.
            Defaults to `0.1` (§5).
        me_max: bool. Subtract the ME-MAX term `H(p_bar)`. Defaults to
            `True`.
        return_metrics: bool. Also return a dict, all without gradient:
            `"cross_entropy"` (the mean cross-entropy term, Fig. 4a),
            `"me_max"` (`H(p_bar)` in nats; the loss is
            `cross_entropy - me_max` with `me_max=True`) and
            `"target_confidence"` (mean over the global views of the
            largest sharpened-target probability, Fig. 4c). Defaults to
            `False`.
        target_views: optional list of the two global views'
            representations `(B, D')` to build the targets from, e.g. the
            projections when `views` are a prediction head's outputs.
            Defaults to `None` (targets from `views`).
        target_support: tensor `(M, D')`, with `target_views`: the support
            representations the targets are classified against.
        target_threshold: float in [0, 1). Target probabilities below it
            are set to 0 (the reference code's 1e-4); `0` keeps them.
            Defaults to `1e-4`.

    Returns:
        The scalar loss, or `(loss, metrics)` with `return_metrics`.

    Example:
    ```python
    views = [keras.random.normal((8, 16)) for _ in range(8)]  # 2 + 6 crops
    support = keras.random.normal((20, 16))
    labels = keras.ops.repeat(keras.ops.arange(10), 2)  # 10 classes x 2
    loss = keras_ssl.losses.paws(views, support, labels, num_classes=10)
    ```

    References:
        - [Assran et al., 2021. Semi-Supervised Learning of Visual Features
          by Non-Parametrically Predicting View Assignments with Support
          Samples](https://arxiv.org/abs/2104.13963)
    """
    settings = _Settings(
        num_classes,
        temperature,
        sharpen_temperature,
        label_smoothing,
        target_threshold,
    )
    _check_settings(settings)
    views, support, target_views, target_support = _checked_inputs(
        views, support, target_views, target_support
    )
    cross_entropy, mean_entropy, global_targets = _paws_terms(
        views, support, support_labels, settings, target_views, target_support
    )
    loss = ops.mean(cross_entropy)
    if me_max:
        loss = loss - mean_entropy
    if return_metrics:
        return loss, _metrics(cross_entropy, mean_entropy, global_targets)
    return loss


@keras.saving.register_keras_serializable(package="keras_ssl")
class PAWS(ArgumentsLoss):
    """The PAWS loss (eq. 4 of Assran et al., 2021) as a `keras.losses.Loss`.

    Use it where a Keras loss object is wanted; the math is
    `keras_ssl.losses.paws`'s (see there for the equation, the targets, the
    ME-MAX term and how the support is gathered across replicas).
    `keras_ssl.models.PAWSPretrainer` trains with it end to end.

    `y_true` holds the support labels: class ids `(M,)` (needs
    `num_classes`) or label rows `(M, K)`. `y_pred` is a dict with
    `"views"`, a list of `V >= 2` tensors `(B, D)` (the two global views
    first), and `"support"`, a tensor `(M, D)`. The loss returns one value
    per anchor, `V * B` of them in view order, each the anchor's
    cross-entropy minus the batch's ME-MAX term `H(p_bar)`, so that the
    default mean reduction is eq. (4) (and Keras's `1 / num_replicas`
    scaling under `tf.distribute` makes the replicas' sum the global
    value). A `sample_weight` of shape `(V * B,)` weights the anchors.

    Args:
        num_classes: optional int. Number of classes `K`; required when
            `y_true` holds class ids. Defaults to `None`.
        temperature: float > 0. Cosine temperature `tau`. Defaults to
            `0.1`.
        sharpen_temperature: float > 0. Sharpening temperature `T`.
            Defaults to `0.25`.
        label_smoothing: float in [0, 1). Defaults to `0.1`.
        me_max: bool. Use the ME-MAX regulariser. Defaults to `True`.
        target_threshold: float in [0, 1). Target probabilities below it
            count as 0, as in the reference code. Defaults to `1e-4`.
        reduction: str. Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        name: str. Defaults to `"paws"`.
        dtype: optional dtype of the loss computation. Defaults to `None`.

    Example:
    ```python
    loss_fn = keras_ssl.losses.PAWS(num_classes=10)
    views = [keras.random.normal((8, 16)) for _ in range(2)]
    support = keras.random.normal((20, 16))
    labels = keras.ops.repeat(keras.ops.arange(10), 2)
    loss = loss_fn(labels, {"views": views, "support": support})
    ```

    References:
        - [Assran et al., 2021. Semi-Supervised Learning of Visual Features
          by Non-Parametrically Predicting View Assignments with Support
          Samples](https://arxiv.org/abs/2104.13963)
    """

    config_args = (*_Settings._fields, "me_max")

    def __init__(
        self,
        num_classes: int | None = None,
        temperature: float = 0.1,
        sharpen_temperature: float = 0.25,
        label_smoothing: float = 0.1,
        me_max: bool = True,
        target_threshold: float = 1e-4,
        reduction: str = "sum_over_batch_size",
        name: str = "paws",
        dtype=None,
    ):
        # Stored first, so that the check reads them as `call` will.
        self.num_classes = num_classes
        self.temperature = temperature
        self.sharpen_temperature = sharpen_temperature
        self.label_smoothing = label_smoothing
        self.me_max = me_max
        self.target_threshold = target_threshold
        _check_settings(self._settings)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    @property
    def _settings(self):
        """The hyper-parameters of eq. (4) as `_paws_terms` takes them."""
        return _Settings(*(getattr(self, name) for name in _Settings._fields))

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, dict) or set(y_pred) != {"views", "support"}:
            keys = sorted(y_pred) if isinstance(y_pred, dict) else None
            raise ValueError(
                "`y_pred` must be a dict with keys 'views' (a list of view "
                "representations) and 'support'. Received: "
                f"{type(y_pred).__name__} with keys {keys}"
            )
        labels = y_true
        if len(y_true.shape) == 1:
            # Keras casts `y_true` to the loss dtype; class ids are ints.
            labels = ops.cast(y_true, "int32")
        views, support, _, _ = _checked_inputs(
            list(y_pred["views"]), y_pred["support"]
        )
        cross_entropy, mean_entropy, _ = _paws_terms(
            views, support, labels, self._settings
        )
        losses = cross_entropy
        if self.me_max:
            losses = losses - mean_entropy
        return ops.cast(losses, self.dtype)


def _check_settings(settings) -> None:
    check_positive("temperature", settings.temperature)
    check_positive("sharpen_temperature", settings.sharpen_temperature)
    check_in_range(
        "label_smoothing", settings.label_smoothing, 0, 1, include_high=False
    )
    check_in_range(
        "target_threshold", settings.target_threshold, 0, 1, include_high=False
    )
    check_positive_int("num_classes", settings.num_classes, optional=True)


def _checked_inputs(views, support, target_views=None, target_support=None):
    """The views, the support and the optional targets as tensors, with
    shapes that fit together."""
    views = [ops.convert_to_tensor(v) for v in views]
    support = ops.convert_to_tensor(support)
    _check_views(views, support)
    target_views, target_support = _check_targets(
        target_views, target_support, views
    )
    return views, support, target_views, target_support


def _check_views(views, support):
    if isinstance(views, dict) or not isinstance(views, (list, tuple)):
        raise ValueError(
            "`views` must be a list of tensors (B, D), the two global views "
            f"first. Received: views of type {type(views)}"
        )
    if len(views) < 2:
        raise ValueError(
            "`views` must hold at least the two global views. Received: "
            f"{len(views)} view(s)"
        )
    shapes = [tuple(v.shape) for v in views]
    if any(len(s) != 2 for s in shapes) or len(support.shape) != 2:
        raise ValueError(
            "Every view and `support` must have rank 2 (batch, dim). "
            f"Received: view shapes={shapes}, "
            f"support.shape={tuple(support.shape)}"
        )
    for axis, what in ((0, "batch size"), (1, "dim")):
        known = {s[axis] for s in shapes if s[axis] is not None}
        if axis == 1 and support.shape[1] is not None:
            known.add(support.shape[1])
        if len(known) > 1:
            raise ValueError(
                f"All views (and the support, for the dim) must have the "
                f"same {what}. Received: view shapes={shapes}, "
                f"support.shape={tuple(support.shape)}"
            )


def _check_class_ids(labels, num_classes):
    """Class ids in `[0, num_classes)`, where their values are known (a
    label out of range would be a row of zeros: a support image without a
    class). Inside a compiled step the ids are symbolic; the models'
    support batches come from `keras_ssl.data`, which checks them."""
    try:
        values = np.asarray(ops.convert_to_numpy(labels))
    except (RuntimeError, TypeError):
        return
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"`support_labels` must be class ids in [0, num_classes) with "
            f"num_classes={num_classes}. Received: support_labels in "
            f"[{values.min()}, {values.max()}]"
        )


def _check_targets(target_views, target_support, views):
    if (target_views is None) != (target_support is None):
        raise ValueError(
            "`target_views` and `target_support` go together. Received: "
            f"target_views={'None' if target_views is None else 'given'}, "
            f"target_support="
            f"{'None' if target_support is None else 'given'}"
        )
    if target_views is None:
        return None, None
    if not isinstance(target_views, (list, tuple)) or len(target_views) != 2:
        raise ValueError(
            "`target_views` must be a list of the two global views' "
            "target representations. Received: target_views of type "
            f"{type(target_views).__name__}"
            + (
                f" and length {len(target_views)}"
                if isinstance(target_views, (list, tuple))
                else ""
            )
        )
    target_views = [ops.convert_to_tensor(v) for v in target_views]
    target_support = ops.convert_to_tensor(target_support)
    _check_views(target_views, target_support)
    rows = {views[0].shape[0], target_views[0].shape[0]} - {None}
    if len(rows) > 1:
        raise ValueError(
            "`target_views` must have the views' batch size. Received: "
            f"target batch {target_views[0].shape[0]}, view batch "
            f"{views[0].shape[0]}"
        )
    return target_views, target_support
