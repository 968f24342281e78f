"""`LARS`: layer-wise adaptive rate scaling with SimCLR's coupled decay."""

import math
import numbers
import re

import keras
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_non_negative
from keras_ssl._checks import check_positive
from keras_ssl.ops.math import loss_dtype


def _as_patterns(value, name):
    """Validates a list of regex patterns; `None` stays `None`."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    try:
        patterns = list(value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a list of regex strings or None. "
            f"Received: {name}={value!r}"
        ) from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(
                f"`{name}` must be a list of regex strings. "
                f"Received: {name}={value}"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{name}` holds an invalid regex ({error}). "
                f"Received: {name}={value}"
            ) from None
    return patterns


def _matches(patterns, path):
    return any(re.search(pattern, path) for pattern in patterns or ())


def _sum_of_squares(x, folds=3):
    """`sum(x**2)`, first adding halves of the tensor `folds` times.

    XLA on CPU reduces with one serial chain of additions; adding halves
    first is elementwise work that XLA fuses and spreads over threads
    (measured in docs/benchmarks.md, "LARS update vs SGD").
    """
    size = math.prod(x.shape)
    squares = ops.reshape(ops.square(x), (size,))
    for _ in range(folds):
        if size % 2:
            break
        size //= 2
        squares = ops.add(squares[:size], squares[size:])
    return ops.sum(squares)


@keras.saving.register_keras_serializable(package="keras_ssl")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (LARS), as used by SimCLR.

    SGD with momentum where each variable's step is scaled by a trust ratio
    `eeta * ||w|| / ||g||`, so that every layer moves by about the same
    fraction of its norm whatever the batch size. This is the optimizer of
    SimCLR and SimCLRv2 for pretraining, fine-tuning and distillation with
    batches of 1024-4096 images.

    The update of a variable `w` with gradient `g` (SimCLR's "classic
    momentum" form) is:

    ```
    g' = g + weight_decay * w            # if w is decayed
    trust = eeta * ||w|| / ||g'||        # if w is adapted and both norms > 0
    trust = 1                            # otherwise
    v = momentum * v + learning_rate * trust * g'
    w = w - v                            # or, with nesterov:
    w = w - (momentum * v + learning_rate * trust * g')
    ```

    Weight decay is added to the gradient *before* the trust ratio, as in
    SimCLR; it is not Keras's decoupled decay, so the base class's
    `weight_decay` is turned off and this class applies its own.

    Which variables are decayed and adapted is decided once, when the
    optimizer is built: by rank (with `exclude_rank_1=True`, biases and
    BatchNorm `gamma`/`beta` are excluded from both, like SimCLR's
    `"bias"`/`"batch_normalization"` name patterns) and by regex patterns
    matched against `variable.path` (e.g. `"dense_1/kernel"`). Keras 3 short
    names (`kernel`, `gamma`) do not say which layer a variable belongs to,
    so patterns never look at them. Variables excluded with Keras's
    `exclude_from_weight_decay()` method are not decayed either.

    Args:
        learning_rate: float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments. The global learning rate before the
            trust ratio. SimCLR uses `0.3 * batch_size / 256` or
            `0.075 * sqrt(batch_size)` (see
            `keras_ssl.optimizers.scale_learning_rate`). Defaults to `0.3`.
        momentum: float in `[0, 1)`. Momentum of the velocity. Defaults to
            `0.9`.
        weight_decay: float >= 0. L2 coefficient added to the gradient
            before the trust ratio. SimCLRv2 pretraining uses `1e-4`.
            Defaults to `0.0`.
        eeta: float > 0. Trust coefficient of the trust ratio. Defaults to
            `0.001`.
        nesterov: bool. Whether to use Nesterov momentum. Defaults to
            `False`.
        exclude_from_weight_decay: list of regex strings or `None`.
            Variables whose `path` matches any of them are not decayed.
            Defaults to `None`.
        exclude_from_layer_adaptation: list of regex strings or `None`.
            Variables whose `path` matches any of them use a trust ratio of
            1. `None` means the same list as `exclude_from_weight_decay`,
            as in SimCLR. Defaults to `None`.
        exclude_rank_1: bool. Whether variables of rank <= 1 (biases,
            BatchNorm `gamma` and `beta`, scalars) are excluded from both
            weight decay and layer adaptation. Defaults to `True`.
        **kwargs: base optimizer arguments (`clipnorm`, `use_ema`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`,
            ...), passed through to `keras.optimizers.Optimizer`.

    Example:

    ```python
    schedule = keras_ssl.optimizers.WarmupCosineDecay(
        base_learning_rate=keras_ssl.optimizers.scale_learning_rate(
            0.3, batch_size=4096
        ),
        total_steps=100_000,
        warmup_steps=5_000,
    )
    optimizer = keras_ssl.optimizers.LARS(
        learning_rate=schedule,
        weight_decay=1e-6,
        exclude_from_weight_decay=["head_supervised"],
    )
    model.compile(optimizer=optimizer, loss="mse")
    ```

    References:
        - [You et al., 2017. Large Batch Training of Convolutional
          Networks](https://arxiv.org/abs/1708.03888)
        - [Chen et al., 2020. A Simple Framework for Contrastive Learning
          of Visual Representations](https://arxiv.org/abs/2002.05709)
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029),
          §3.1: "We use the LARS optimizer (with a momentum of 0.9)
          throughout for pretraining, fine-tuning and distillation."
    """

    def __init__(
        self,
        learning_rate=0.3,
        momentum=0.9,
        weight_decay=0.0,
        eeta=0.001,
        nesterov=False,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        exclude_rank_1=True,
        **kwargs,
    ):
        if isinstance(learning_rate, numbers.Real):
            check_positive("learning_rate", learning_rate)
        check_in_range("momentum", momentum, 0, 1, include_high=False)
        if weight_decay is None:
            weight_decay = 0.0
        check_non_negative("weight_decay", weight_decay)
        check_positive("eeta", eeta)
        # The base class's `weight_decay` is Keras's decoupled decay
        # (w -= lr * wd * w after the step). SimCLR's decay is coupled: it
        # enters the gradient before the trust ratio, so the base class must
        # not see it and the value lives in `weight_decay_rate`.
        super().__init__(
            learning_rate=learning_rate, weight_decay=None, **kwargs
        )
        self.momentum = momentum
        self.weight_decay_rate = weight_decay
        self.eeta = eeta
        self.nesterov = nesterov
        # Not stored as `self.exclude_from_weight_decay`: that would hide
        # the base class's method of the same name.
        self.weight_decay_exclusions = _as_patterns(
            exclude_from_weight_decay, "exclude_from_weight_decay"
        )
        self.layer_adaptation_exclusions = _as_patterns(
            exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
        )
        self.exclude_rank_1 = exclude_rank_1
        self._excluded_ids = set()
        self._unadapted_ids = set()

    def exclude_variables(self, var_list, weight_decay=True):
        """Updates these variables by plain SGD with momentum.

        A trust ratio of 1 and, with `weight_decay=True`, no coupled
        weight decay, added to the exclusions already made. SimCLR treats
        its supervised head this way (regularising it with an L2 loss
        instead); models call this for such heads. Must be called before
        the optimizer is built.

        Args:
            var_list: list of `keras.Variable`s.
            weight_decay: bool. Whether they are left out of the coupled
                weight decay too. `False` keeps it: the step is then
                `learning_rate * (g + weight_decay * w)`, which is SGD on
                the loss plus SimCLR's L2 term `weight_decay / 2 * ||w||²`.
                Defaults to `True`.
        """
        if self.built:
            raise ValueError(
                "`exclude_variables()` must be called before the optimizer "
                "is built (before the first training step)."
            )
        ids = {id(variable) for variable in var_list}
        self._unadapted_ids.update(ids)
        if weight_decay:
            self._excluded_ids.update(ids)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        # Decided here, from the Keras variables: `update_step` may receive
        # the backend's variable (a `tf.Variable` under TensorFlow), which
        # has no `path`. Python booleans also keep the traced step free of
        # per-variable conditionals.
        decayed = []
        adapted = []
        for variable in var_list:
            path = getattr(variable, "path", variable.name)
            by_rank = self.exclude_rank_1 and len(variable.shape) <= 1
            excluded = by_rank or id(variable) in self._excluded_ids
            decayed.append(
                self.weight_decay_rate > 0
                and not excluded
                and not _matches(self.weight_decay_exclusions, path)
                and self._keras_decays(variable)
            )
            adaptation_exclusions = self.layer_adaptation_exclusions
            if adaptation_exclusions is None:
                adaptation_exclusions = self.weight_decay_exclusions
            adapted.append(
                not excluded
                and id(variable) not in self._unadapted_ids
                and not _matches(adaptation_exclusions, path)
            )
        self._decayed = tuple(decayed)
        self._adapted = tuple(adapted)

    def update_step(self, gradient, variable, learning_rate):
        index = self._slot_index(variable)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self._decayed[index]:
            gradient = ops.add(
                gradient, ops.multiply(variable, self.weight_decay_rate)
            )
        if self._adapted[index]:
            # Norms and trust ratio in at least float32, whatever the
            # variables' dtype.
            norm_dtype = loss_dtype(variable)
            w_squared = _sum_of_squares(ops.cast(variable, norm_dtype))
            g_squared = _sum_of_squares(ops.cast(gradient, norm_dtype))
            # trust = eeta * ||w|| / ||g'||. A zero-initialised variable or
            # a zero gradient gets the plain learning rate; `where` also
            # discards the 0/0 of the unused branch.
            trust = ops.where(
                ops.minimum(w_squared, g_squared) > 0,
                ops.divide(
                    ops.multiply(ops.sqrt(w_squared), self.eeta),
                    ops.sqrt(g_squared),
                ),
                1.0,
            )
            lr = ops.multiply(lr, ops.cast(trust, variable.dtype))
        step = ops.multiply(gradient, lr)
        velocity = self._momentums[index]
        new_velocity = ops.add(ops.multiply(velocity, self.momentum), step)
        self.assign(velocity, new_velocity)
        if self.nesterov:
            step = ops.add(ops.multiply(new_velocity, self.momentum), step)
        else:
            step = new_velocity
        self.assign_sub(variable, step)

    # Keras 3.15.1 (keras/src/optimizers/base_optimizer.py) has no public
    # API for a variable's slot index (its backends key variables their own
    # way) or for what its public `exclude_from_weight_decay()` excluded.
    # These two methods are this package's only uses of the private ones;
    # tests/optimizers/test_lars.py (`TestKerasPrivateAPI`) fails if Keras
    # renames them or changes what they answer.

    def _slot_index(self, variable) -> int:
        """Index of `variable` (a Keras or backend variable) in the lists
        built by `add_optimizer_variables`."""
        return self._get_variable_index(variable)

    def _keras_decays(self, variable) -> bool:
        """Whether Keras's `exclude_from_weight_decay()` leaves `variable`
        decayed."""
        return self._use_weight_decay(variable)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay_rate,
                "eeta": self.eeta,
                "nesterov": self.nesterov,
                "exclude_from_weight_decay": self.weight_decay_exclusions,
                "exclude_from_layer_adaptation": (
                    self.layer_adaptation_exclusions
                ),
                "exclude_rank_1": self.exclude_rank_1,
            }
        )
        return config
