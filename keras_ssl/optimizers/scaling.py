"""`scale_learning_rate`: SimCLR's learning-rate scaling with batch size."""

import math

from keras_ssl._checks import check_positive
from keras_ssl._checks import check_positive_int

_RULES = ("linear", "sqrt")


def scale_learning_rate(
    base_lr: float, batch_size: int, rule: str = "linear"
) -> float:
    """Scales a base learning rate to a batch size, as SimCLR does.

    Use it to turn a paper's per-rule base rate into the rate for your
    global batch size (the sum over all replicas), before building a
    schedule such as `keras_ssl.optimizers.WarmupCosineDecay`.

    Args:
        base_lr: float > 0. The base learning rate of the rule.
        batch_size: int >= 1. The global batch size.
        rule: str. `"linear"` gives `base_lr * batch_size / 256` (SimCLR:
            `0.3 * B / 256`); `"sqrt"` gives `base_lr * sqrt(batch_size)`
            (SimCLR: `0.075 * sqrt(B)`, SimCLRv2 pretraining: `0.1 *
            sqrt(B)`). Defaults to `"linear"`.

    Returns:
        The scaled learning rate, a Python float.

    Example:

    ```python
    lr = keras_ssl.optimizers.scale_learning_rate(0.1, 4096, rule="sqrt")
    # 6.4, SimCLRv2's peak pretraining rate.
    ```

    References:
        - [Chen et al., 2020. A Simple Framework for Contrastive Learning
          of Visual Representations](https://arxiv.org/abs/2002.05709),
          Appendix B.1 (linear and square-root scaling).
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029),
          §3.1.
    """
    check_positive("base_lr", base_lr)
    check_positive_int("batch_size", batch_size)
    if rule == "linear":
        return float(base_lr * batch_size / 256)
    if rule == "sqrt":
        return float(base_lr * math.sqrt(batch_size))
    raise ValueError(f"`rule` must be one of {_RULES}. Received: rule={rule!r}")
