"""SimCLRv2's distillation loss: a student learns the teacher's labels."""

import keras
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_positive
from keras_ssl.losses._loss import ArgumentsLoss
from keras_ssl.ops.math import loss_dtype
from keras_ssl.ops.math import soft_cross_entropy


def _check_logits(teacher_logits, student_logits, labels, labeled_logits):
    """Matching shapes where they are known: the same classes for every
    logits tensor and one label per labeled row."""
    named = {"teacher_logits": teacher_logits, "student_logits": student_logits}
    if labeled_logits is not None:
        named["labeled_logits"] = labeled_logits
    shapes = {name: tuple(x.shape) for name, x in named.items()}
    received = ", ".join(f"{name}.shape={s}" for name, s in shapes.items())
    if any(len(s) != 2 for s in shapes.values()):
        raise ValueError(
            f"Logits must have rank 2 (batch, classes). Received: {received}"
        )
    classes = {s[1] for s in shapes.values() if s[1] is not None}
    batches = {shapes["teacher_logits"][0], shapes["student_logits"][0]}
    if len(classes) > 1 or len(batches - {None}) > 1:
        raise ValueError(
            "`teacher_logits` and `student_logits` must have the same shape "
            "(the same images and classes), and `labeled_logits` the same "
            f"number of classes. Received: {received}"
        )
    if labels is None or labeled_logits is None:
        return
    label_shape = tuple(labels.shape)
    count = label_shape[0] if len(label_shape) in (1, 2) else -1
    rows = shapes["labeled_logits"][0]
    if (
        label_shape[1:] not in ((), (1,))
        or None not in (count, rows)
        and (count != rows)
    ):
        raise ValueError(
            "`labels` must be class ids (L,), one per row of "
            f"`labeled_logits`. Received: labels.shape={label_shape}, "
            f"labeled_logits.shape={shapes['labeled_logits']}"
        )


def _upcast(*tensors):
    """The tensors in float32 (float64 stays float64)."""
    tensors = [ops.convert_to_tensor(x) for x in tensors]
    return [ops.cast(x, loss_dtype(x)) for x in tensors]


def _per_example(teacher_logits, student_logits, temperature):
    """Eq. (2) of each example: `-sum_y P_T(y|x; tau) log P_S(y|x; tau)`."""
    # The teacher is fixed: its distribution is a target, not a prediction.
    teacher_logits = ops.stop_gradient(teacher_logits)
    targets = ops.softmax(teacher_logits / temperature)
    return soft_cross_entropy(targets, logits=student_logits / temperature)


def distillation(
    teacher_logits,
    student_logits,
    temperature: float = 1.0,
    labels=None,
    labeled_logits=None,
    alpha: float = 1.0,
    return_metrics: bool = False,
):
    """SimCLRv2's distillation loss (eqs. 2-3), averaged over examples.

    Eq. (2): the student matches the teacher's temperature-softened class
    distribution on (unlabeled) images,
    `-sum_y P_T(y|x; tau) log P_S(y|x; tau)`, with the teacher fixed. With
    `labels` and `alpha < 1`, eq. (3) adds the cross-entropy of the
    student's predictions `labeled_logits` on labeled images:
    `(1 - alpha) * CE(y, P_S) + alpha * distill`.

    Args:
        teacher_logits: tensor `(B, K)`. The teacher's logits; no gradient
            flows into them.
        student_logits: tensor `(B, K)`. The student's logits of the same
            images.
        temperature: float > 0. `tau` of eq. (2). Defaults to `1.0`
            (SimCLRv2 Table 2).
        labels: optional int tensor `(L,)`. Labels of the labeled images.
            Defaults to `None` (eq. 2 only).
        labeled_logits: optional tensor `(L, K)`. The student's logits of
            the labeled images, at temperature 1. Required with `labels`.
        alpha: float in `[0, 1]`. Weight of the distillation term in eq.
            (3). Defaults to `1.0` (labels are not used).
        return_metrics: bool. Also return a dict with `"distill_loss"` and,
            when the labeled term is used, `"supervised_loss"`. Defaults to
            `False`.

    Returns:
        The scalar loss, or `(loss, metrics)` when `return_metrics`.

    Example:
    ```python
    teacher_logits = keras.random.normal((8, 10))
    student_logits = keras.random.normal((8, 10))
    loss = keras_ssl.losses.distillation(
        teacher_logits, student_logits, temperature=0.1
    )
    ```

    References:
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
    """
    check_positive("temperature", temperature)
    check_in_range("alpha", alpha, 0, 1)
    if alpha < 1.0 and labels is None:
        raise ValueError(
            "`alpha` < 1 weights the labeled cross-entropy of eq. (3), which "
            "needs `labels` and `labeled_logits`; pass alpha=1.0 for "
            f"distillation alone. Received: alpha={alpha}, labels=None"
        )
    if labels is not None:
        labels = ops.convert_to_tensor(labels)
    # The softmaxes in at least float32, as the other losses (a mixed
    # precision network gives bfloat16 or float16 logits).
    teacher_logits, student_logits = _upcast(teacher_logits, student_logits)
    if labeled_logits is not None:
        (labeled_logits,) = _upcast(labeled_logits)
    if alpha < 1.0:
        _check_logits(teacher_logits, student_logits, labels, labeled_logits)
    else:
        # Eq. (2) alone: labels, if any, are not read.
        _check_logits(teacher_logits, student_logits, None, None)
    distill = ops.mean(
        _per_example(teacher_logits, student_logits, temperature)
    )
    metrics = {"distill_loss": distill}
    loss = distill
    if labels is not None and alpha < 1.0:
        if labeled_logits is None:
            raise ValueError(
                "`labels` were given without `labeled_logits`, the "
                "student's logits of the labeled images."
            )
        supervised = ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, labeled_logits, from_logits=True
            )
        )
        metrics["supervised_loss"] = supervised
        loss = (1.0 - alpha) * supervised + alpha * distill
    if return_metrics:
        return loss, metrics
    return loss


@keras.saving.register_keras_serializable(package="keras_ssl")
class Distillation(ArgumentsLoss):
    """SimCLRv2's distillation loss (eq. 2) as a `keras.losses.Loss`.

    `y_true` holds the teacher's logits and `y_pred` the student's; the
    loss of each example is
    `-sum_y P_T(y|x; tau) log P_S(y|x; tau)` with no gradient into the
    teacher's logits. Eq. (3)'s labeled term is a plain cross-entropy on
    the labeled images; `keras_ssl.losses.distillation` adds it.

    Args:
        temperature: float > 0. `tau`. Defaults to `1.0`.
        reduction: str. Keras loss reduction. Defaults to
            `"sum_over_batch_size"` (the mean over examples).
        name: str. Defaults to `"distillation"`.
        dtype: optional dtype of the loss computation. Defaults to `None`.

    Example:
    ```python
    loss_fn = keras_ssl.losses.Distillation(temperature=0.1)
    loss = loss_fn(teacher_logits, student_logits)
    ```

    References:
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
    """

    config_args = ("temperature",)

    def __init__(
        self,
        temperature: float = 1.0,
        reduction: str = "sum_over_batch_size",
        name: str = "distillation",
        dtype=None,
    ):
        check_positive("temperature", temperature)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        return _per_example(y_true, y_pred, self.temperature)
