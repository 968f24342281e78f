"""SimCLRv2Pretrainer's online probe: its own learning rate, its own log.

The checks compare models with each other rather than with a gradient
tape, so they hold under TensorFlow and JAX alike.
"""

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl.layers import ProjectionHead
from keras_ssl.models import SimCLRv2Pretrainer
from keras_ssl.testing import TestCase
from tests.models.conftest import tiny_encoder
from tests.models.test_simclrv2_pretrainer import deterministic_views


def make_model(probe_learning_rate, frozen_encoder=False):
    """A tiny pretrainer with deterministic views and seeded weights."""
    keras.utils.set_random_seed(3)
    encoder = tiny_encoder()
    if frozen_encoder:
        # Then the probe's features are the same whatever the rate of the
        # rest of the model.
        encoder.trainable = False
    return SimCLRv2Pretrainer(
        encoder,
        head=ProjectionHead(num_layers=2, output_dim=4),
        views=deterministic_views(),
        memory_size=0,
        num_classes=3,
        probe_learning_rate=probe_learning_rate,
    )


def probe_weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.probe.weights]


def train(model, optimizer, batch, steps):
    model.compile(optimizer=optimizer)
    for _ in range(steps):
        model.train_on_batch(batch)
    return probe_weights(model)


class TestProbeLearningRate(TestCase):
    def test_one_step_moves_the_probe_by_its_own_rate(self, batch):
        # With momentum starting at 0, one step moves a variable by
        # rate * gradient: the probe's move at rate 0.02 is 0.02 / 0.5 of
        # its move at the optimizer's rate 0.5, from the same gradient.
        coupled = make_model(probe_learning_rate=None)
        start = probe_weights(coupled)
        after_coupled = train(coupled, keras_ssl.optimizers.LARS(0.5), batch, 1)
        own = make_model(probe_learning_rate=0.02)
        after_own = train(own, keras_ssl.optimizers.LARS(0.5), batch, 1)
        for w0, w_coupled, w_own in zip(start, after_coupled, after_own):
            assert np.abs(w_coupled - w0).max() > 1e-4
            self.assertAllClose(
                w_own - w0, (w_coupled - w0) * (0.02 / 0.5), atol=1e-6
            )
        # The rest of the model steps at the optimizer's rate either way.
        self.assertAllClose(
            coupled.head.weights[0], own.head.weights[0], atol=1e-6
        )

    def test_the_probe_ignores_the_schedule(self, batch):
        # Under a decaying schedule (and momentum) the probe steps as plain
        # SGD with momentum at a constant 0.05 does.
        schedule = keras.optimizers.schedules.ExponentialDecay(
            0.8, decay_steps=1, decay_rate=0.3
        )
        scheduled = make_model(probe_learning_rate=0.05, frozen_encoder=True)
        actual = train(scheduled, keras_ssl.optimizers.LARS(schedule), batch, 3)
        constant = make_model(probe_learning_rate=None, frozen_encoder=True)
        expected = train(constant, keras_ssl.optimizers.LARS(0.05), batch, 3)
        for a, e in zip(actual, expected):
            self.assertAllClose(a, e, atol=1e-5, rtol=1e-4)

    def test_a_zero_rate_step_leaves_the_probe_unchanged(self, batch):
        # The first step of a linear warm-up has rate 0: no division by it.
        warmup = keras_ssl.optimizers.WarmupCosineDecay(
            0.5, total_steps=10, warmup_steps=5
        )
        model = make_model(probe_learning_rate=0.05)
        start = probe_weights(model)
        after = train(model, keras_ssl.optimizers.LARS(warmup), batch, 1)
        for w0, w in zip(start, after):
            assert np.all(np.isfinite(w))
            self.assertAllClose(w, w0)

    def test_loss_log_is_the_contrastive_loss(self, batch):
        model = make_model(probe_learning_rate=0.05)
        model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
        logs = model.train_on_batch(batch, return_dict=True)
        assert logs["probe_loss"] > 0.1
        self.assertAllClose(logs["loss"], logs["contrastive_loss"])
        logs = model.test_on_batch(batch, return_dict=True)
        self.assertAllClose(logs["loss"], logs["contrastive_loss"])

    @pytest.mark.parametrize("rate", [None, 0.05])
    def test_config_round_trip(self, rate):
        model = make_model(probe_learning_rate=rate)
        assert model.get_config()["probe_learning_rate"] == rate
        rebuilt = self.run_config_round_trip(model)
        assert rebuilt.probe_learning_rate == rate

    @pytest.mark.parametrize("rate", [0.0, -0.1, float("nan"), "0.1"])
    def test_bad_rate_is_refused(self, rate):
        with pytest.raises(ValueError, match="probe_learning_rate"):
            make_model(probe_learning_rate=rate)
