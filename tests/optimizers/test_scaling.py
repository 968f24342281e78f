import math

import pytest

from keras_ssl.optimizers import scale_learning_rate
from keras_ssl.testing import TestCase


class TestScaleLearningRate(TestCase):
    @pytest.mark.parametrize(
        "base_lr, batch_size, rule, expected",
        [
            # SimCLR: 0.3 x B / 256 and 0.075 x sqrt(B).
            (0.3, 256, "linear", 0.3),
            (0.3, 4096, "linear", 4.8),
            (0.075, 4096, "sqrt", 4.8),
            # SimCLRv2 §3.1: pretraining 6.4 = 0.1 x sqrt(4096); fine-tuning
            # 0.16 = 0.005 x sqrt(1024) and 0.064 = 0.002 x sqrt(1024).
            (0.1, 4096, "sqrt", 6.4),
            (0.005, 1024, "sqrt", 0.16),
            (0.002, 1024, "sqrt", 0.064),
            (1.0, 1, "linear", 1 / 256),
        ],
    )
    def test_rules(self, base_lr, batch_size, rule, expected):
        value = scale_learning_rate(base_lr, batch_size, rule=rule)
        assert isinstance(value, float)
        assert math.isclose(value, expected, rel_tol=1e-12)

    def test_default_rule_is_linear(self):
        assert scale_learning_rate(0.3, 512) == scale_learning_rate(
            0.3, 512, rule="linear"
        )

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(rule="cubic"), "rule='cubic'"),
            (dict(base_lr=0.0), "base_lr=0.0"),
            (dict(base_lr=-0.3), "base_lr=-0.3"),
            (dict(batch_size=0), "batch_size=0"),
            (dict(batch_size=2.5), "batch_size=2.5"),
            (dict(batch_size=True), "batch_size=True"),
        ],
    )
    def test_invalid_arguments(self, kwargs, message):
        args = dict(base_lr=0.3, batch_size=256)
        args.update(kwargs)
        with pytest.raises(ValueError, match=message):
            scale_learning_rate(**args)
