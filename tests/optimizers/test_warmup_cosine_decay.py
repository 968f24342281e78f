import keras
import numpy as np
import pytest

from keras_ssl.optimizers import WarmupCosineDecay
from keras_ssl.testing import TestCase


def _reference(step, base, total, warmup, end):
    # SimCLRv2 §3.1: linear warm-up from 0, then cosine decay; flat at the
    # end value once `total` steps are done.
    if step < warmup:
        return base * step / warmup
    if step >= total:
        return end
    progress = (step - warmup) / (total - warmup)
    return end + (base - end) * 0.5 * (1.0 + np.cos(np.pi * progress))


class TestWarmupCosineDecay(TestCase):
    @pytest.mark.parametrize(
        "base, total, warmup, end",
        [
            (6.4, 100, 5, 0.0),
            (0.3, 10, 0, 0.0),  # no warm-up: starts at the peak
            (1.0, 8, 8, 0.0),  # warm-up only, then the end value
            (2.0, 20, 4, 0.5),  # decays to a non-zero floor
            (1.0, 1, 0, 0.0),
        ],
    )
    def test_matches_reference(self, base, total, warmup, end):
        schedule = WarmupCosineDecay(
            base, total_steps=total, warmup_steps=warmup, end_learning_rate=end
        )
        steps = sorted(
            {0, 1, warmup - 1, warmup, warmup + 1, (warmup + total) // 2}
            | {total - 1, total, total + 1, 3 * total}
        )
        for step in [s for s in steps if s >= 0]:
            expected = _reference(step, base, total, warmup, end)
            self.assertAllClose(
                schedule(step), expected, atol=1e-6, msg=f"step={step}"
            )

    def test_paper_values(self):
        # SimCLRv2: peak 6.4 after the first 5% of the steps, then cosine
        # decay: half the peak half-way through the decay, 0 at the end.
        schedule = WarmupCosineDecay(6.4, total_steps=1000, warmup_steps=50)
        self.assertAllClose(schedule(25), 3.2, atol=1e-6)
        self.assertAllClose(schedule(50), 6.4, atol=1e-6)
        self.assertAllClose(schedule(525), 3.2, atol=1e-5)
        self.assertAllClose(schedule(1000), 0.0, atol=1e-6)

    def test_tensor_steps(self):
        schedule = WarmupCosineDecay(1.0, total_steps=10, warmup_steps=4)
        for dtype in ("int32", "float32"):
            step = keras.ops.convert_to_tensor(2, dtype=dtype)
            self.assertAllClose(schedule(step), 0.5)

    def test_config_round_trip(self):
        schedule = WarmupCosineDecay(
            0.5, total_steps=30, warmup_steps=3, end_learning_rate=0.01
        )
        rebuilt = self.run_config_round_trip(schedule)
        assert rebuilt.get_config() == {
            "base_learning_rate": 0.5,
            "total_steps": 30,
            "warmup_steps": 3,
            "end_learning_rate": 0.01,
            "name": "warmup_cosine_decay",
        }
        revived = keras.optimizers.schedules.deserialize(
            keras.optimizers.schedules.serialize(schedule)
        )
        assert isinstance(revived, WarmupCosineDecay)
        self.assertAllClose(revived(10), schedule(10))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(base_learning_rate=0.0), "base_learning_rate=0.0"),
            (dict(total_steps=0), "total_steps=0"),
            (dict(total_steps=2.5), "total_steps=2.5"),
            (dict(warmup_steps=-1), "warmup_steps=-1"),
            (dict(warmup_steps=11), "warmup_steps=11"),
            (dict(end_learning_rate=-0.1), "end_learning_rate=-0.1"),
        ],
    )
    def test_invalid_arguments(self, kwargs, message):
        args = dict(base_learning_rate=1.0, total_steps=10)
        args.update(kwargs)
        with pytest.raises(ValueError, match=message):
            WarmupCosineDecay(**args)


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="float64 on JAX needs jax_enable_x64",
)
def test_float64_models_step_at_the_exact_rate():
    schedule = WarmupCosineDecay(3.2, total_steps=30, warmup_steps=6)
    exact = [_reference(s, 3.2, 30, 6, 0.0) for s in range(31)]
    float32 = [keras.ops.convert_to_numpy(schedule(s)) for s in range(31)]
    assert all(r.dtype == np.float32 for r in float32)
    np.testing.assert_allclose(float32, exact, rtol=1e-6, atol=1e-6)
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        float64 = [keras.ops.convert_to_numpy(schedule(s)) for s in range(31)]
    finally:
        keras.config.set_floatx(previous)
    # float32 rounds the rates (step 1's by 2.5e-8 relative); float64
    # gives the Python floats' rates.
    np.testing.assert_allclose(float64, exact, rtol=1e-14, atol=0)
    assert np.max(np.abs(np.subtract(float32, exact))) > 1e-8
