"""WiSE-FT at the end of LP-FT: the fine-tuned model's weights averaged
with the ones it started from."""

import types

import keras
import numpy as np

from keras_ssl.models import FineTuner
from keras_ssl.recipes import stages
from tests.models.conftest import tiny_encoder


def _run(share, linear_probe_first=True):
    config = types.SimpleNamespace(
        finetune_interpolation=share,
        linear_probe_first=linear_probe_first,
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 16, 16, 3)).astype("uint8")
    labeled = types.SimpleNamespace(x=x, y=np.arange(12) % 3)
    splits = types.SimpleNamespace(x_train=x)
    return types.SimpleNamespace(
        config=config,
        labeled=labeled,
        splits=splits,
        stage="finetune",
        start_weights={},
    )


def _values(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _fine_tune(run):
    keras.utils.set_random_seed(0)
    model = FineTuner(
        tiny_encoder(), num_classes=3, ft_layer=0, frozen_batch_norm=True
    )
    stages.linear_head_first(run, model)
    start = _values(model)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(run.labeled.x, run.labeled.y, epochs=2, verbose=0)
    return model, start, _values(model)


def test_weights_become_the_average_of_start_and_fine_tuned():
    run = _run(0.25)
    model, start, trained = _fine_tune(run)
    stages.interpolate_with_start(run, model)
    moved = 0
    for variable, first, last in zip(model.weights, start, trained):
        value = keras.ops.convert_to_numpy(variable)
        if keras.backend.is_float_dtype(variable.dtype):
            np.testing.assert_allclose(
                value, 0.75 * first + 0.25 * last, rtol=1e-6, atol=1e-7
            )
            moved += int(not np.array_equal(first, last))
        else:
            # Seed states and counters are left as training left them.
            np.testing.assert_array_equal(value, last)
    # Fine-tuning moved the classifier and the convolutions.
    assert moved >= 3


def test_share_one_or_no_probe_keeps_the_fine_tuned_weights():
    for run in (_run(1.0), _run(0.5, linear_probe_first=False)):
        model, _, trained = _fine_tune(run)
        assert "finetune" not in run.start_weights
        stages.interpolate_with_start(run, model)
        for value, last in zip(_values(model), trained):
            np.testing.assert_array_equal(value, last)
