"""`WarmupCosineDecay`: linear warm-up, then cosine decay (SimCLR)."""

import math

import keras
from keras import ops

from keras_ssl._checks import check_non_negative
from keras_ssl._checks import check_positive
from keras_ssl._checks import check_positive_int
from keras_ssl._checks import is_int


@keras.saving.register_keras_serializable(package="keras_ssl")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0, then cosine decay to `end_learning_rate`.

    The schedule of SimCLR and SimCLRv2 pretraining and distillation. With
    `step` the optimizer's iteration count (0 on the first update),
    `W = warmup_steps` and `T = total_steps`:

    ```
    lr = base_learning_rate * step / W                       if step < W
    lr = end + (base_learning_rate - end)
             * 0.5 * (1 + cos(pi * (step - W) / (T - W)))    if W <= step < T
    lr = end_learning_rate                                   if step >= T
    ```

    Args:
        base_learning_rate: float > 0. The peak learning rate, reached at
            the end of the warm-up.
        total_steps: int >= 1. The step at which the decay reaches
            `end_learning_rate`; the rate stays there afterwards.
        warmup_steps: int in `[0, total_steps]`. Length of the linear
            warm-up. SimCLRv2 warms up for the first 5% of the epochs.
            Defaults to `0`.
        end_learning_rate: float >= 0. The final learning rate. Defaults to
            `0.0`.
        name: str. Name of the schedule. Defaults to
            `"warmup_cosine_decay"`.

    Example:

    ```python
    schedule = keras_ssl.optimizers.WarmupCosineDecay(
        base_learning_rate=6.4, total_steps=250_000, warmup_steps=12_500
    )
    optimizer = keras_ssl.optimizers.LARS(learning_rate=schedule)
    ```

    References:
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029),
          §3.1: "The learning rate is linearly increased for the first 5% of
          epochs, reaching maximum of 6.4 (= 0.1 × sqrt(BatchSize)), and
          then decayed with a cosine decay schedule."
    """

    def __init__(
        self,
        base_learning_rate,
        total_steps,
        warmup_steps=0,
        end_learning_rate=0.0,
        name="warmup_cosine_decay",
    ):
        check_positive("base_learning_rate", base_learning_rate)
        check_positive_int("total_steps", total_steps)
        if not (is_int(warmup_steps) and 0 <= warmup_steps <= total_steps):
            raise ValueError(
                "`warmup_steps` must be an int in [0, total_steps="
                f"{total_steps}]. Received: warmup_steps={warmup_steps}"
            )
        check_non_negative("end_learning_rate", end_learning_rate)
        self.base_learning_rate = base_learning_rate
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_learning_rate = end_learning_rate
        self.name = name

    def __call__(self, step):
        # float32, as Keras's schedules compute, unless the float type is
        # float64: a float64 model then steps at the exact rate.
        dtype = "float64" if keras.config.floatx() == "float64" else "float32"
        step = ops.cast(step, dtype)
        base = self.base_learning_rate
        end = self.end_learning_rate
        # max(..., 1) only guards the division: with W == 0 the warm-up
        # branch is never selected, and with W == T the decay branch is
        # selected only from step T on, where progress is clipped to 1.
        warmup = base * step / max(self.warmup_steps, 1)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0, 1)
        if self.total_steps == self.warmup_steps:
            progress = ops.ones_like(progress)
        cosine = end + (base - end) * 0.5 * (1 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "end_learning_rate": self.end_learning_rate,
            "name": self.name,
        }
