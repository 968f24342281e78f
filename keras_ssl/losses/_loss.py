"""The base classes of the package's `keras.losses.Loss` objects."""

import keras


class ArgumentsLoss(keras.losses.Loss):
    """A `keras.losses.Loss` whose config is its constructor's arguments.

    A subclass stores each of its own arguments under its own name and
    lists them in `config_args`; `get_config` adds them to the base
    config (`name`, `reduction`, `dtype`).
    """

    # The subclass's own constructor arguments, which `get_config` stores.
    config_args = ()

    def get_config(self):
        config = super().get_config()
        for name in self.config_args:
            config[name] = getattr(self, name)
        return config


class PredictionsOnlyLoss(ArgumentsLoss):
    """An `ArgumentsLoss` computed from `y_pred` alone (`y_true` ignored).

    The positives of a self-supervised loss come from the pairing of the
    views, not from labels: callers pass `y_true=None`.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras converts `y_true` to a tensor, which fails on `None`; it
        # carries nothing here, so an empty structure stands in for it.
        return super().__call__((), y_pred, sample_weight=sample_weight)
