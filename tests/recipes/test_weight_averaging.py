"""WiSE-FT at the end of LP-FT: the fine-tuned model's weights averaged
with the ones it started from."""

import types

import keras
import numpy as np
import pytest

from keras_ssl import data as ssl_data
from keras_ssl.models import FineTuner
from keras_ssl.models import fine_tuning
from keras_ssl.recipes import stages
from tests.models.conftest import tiny_encoder


def _run(share, linear_probe_first=True, folds=0):
    config = types.SimpleNamespace(
        finetune_interpolation=share,
        linear_probe_first=linear_probe_first,
        interpolation_folds=folds,
        seed=0,
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


def _separable_run(folds, learning_rate):
    """Three classes of flat colours, 8 images each: the probe on frozen
    random features already classifies every held-out image."""
    run = _run(0.5, folds=folds)
    rng = np.random.default_rng(1)
    y = np.arange(24) % 3
    colours = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230]])
    noise = rng.integers(-10, 10, (24, 16, 16, 3))
    x = np.clip(colours[y][:, None, None, :] + noise, 0, 255).astype("uint8")
    run.labeled = types.SimpleNamespace(x=x, y=y)
    run.current = types.SimpleNamespace(
        batch=lambda run: 8,
        optimizer=lambda run, steps: keras.optimizers.SGD(learning_rate),
    )
    run.total_steps = 6
    run.result = types.SimpleNamespace(
        stages={"finetune": types.SimpleNamespace(metrics={})}
    )
    keras.utils.set_random_seed(0)
    model = FineTuner(
        tiny_encoder(), num_classes=3, ft_layer=0, frozen_batch_norm=True
    )
    stages.linear_head_first(run, model)
    optimizer = keras.optimizers.SGD(learning_rate)
    model.compile(optimizer=optimizer)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return run, model, optimizer


def _cross_validated_share(run, model):
    """`fine_tuning.cross_validated_share` with the stage's settings, as
    the fine-tuning stage calls it."""
    return fine_tuning.cross_validated_share(
        model,
        run.labeled.x,
        run.labeled.y,
        run.start_weights[run.stage],
        folds=run.config.interpolation_folds,
        optimizer=lambda steps: run.current.optimizer(run, steps),
        steps=run.total_steps,
        batch_size=run.current.batch(run),
        seed=run.config.seed,
    )


def test_cross_validation_keeps_the_probe_when_fine_tuning_wrecks_it():
    run, model, optimizer = _separable_run(folds=3, learning_rate=1e4)
    start = run.start_weights["finetune"]
    share, scores = _cross_validated_share(run, model)
    # Every image is held out once: the scores are counts over all 24.
    assert all(round(v * 24) == v * 24 for v in scores.values())
    assert scores[0.0] == 1.0
    assert scores[1.0] < 1.0
    assert share == 0.0
    # The fine-tuned weights and the optimizer are put back.
    assert model.optimizer is optimizer
    stages.interpolate_with_start(run, model)
    assert run.result.stages["finetune"].metrics["finetune_interpolation"] == 0
    for variable, first in zip(model.weights, start):
        if keras.backend.is_float_dtype(variable.dtype):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable), first
            )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.function's traces"
)
def test_cross_validation_traces_the_model_once_for_its_folds():
    from keras_ssl.evaluation.embed import _FUNCTIONS

    run, model, _ = _separable_run(folds=3, learning_rate=1e-3)
    # 23 images: folds of unequal sizes, each compiled again.
    run.labeled.x, run.labeled.y = run.labeled.x[:23], run.labeled.y[:23]
    _cross_validated_share(run, model)
    assert _FUNCTIONS[model].experimental_get_tracing_count() == 1


def _fold_ends(run, model):
    """Each fold's fine-tuned weights and Keras's training function after
    its `fit`, and the crop's random state before it, from
    `cross_validated_share` as the stage calls it."""
    ends, functions, crops = [], [], []
    fit = model.fit

    def recording_fit(*args, **kwargs):
        # The crop's random state, which the folds continue.
        crops.append(
            [keras.ops.convert_to_numpy(v) for v in model.augment.variables]
        )
        history = fit(*args, **kwargs)
        ends.append(_values(model))
        functions.append(model.train_function)
        return history

    model.fit = recording_fit
    _cross_validated_share(run, model)
    del model.fit
    return ends, functions, crops


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "lars"])
def test_each_fold_trains_as_with_a_fresh_optimizer(optimizer):
    """The folds share one compiled optimizer, reset to its initial state
    before each fold: every fold ends exactly where fine-tuning with an
    optimizer of its own ends, and the step is traced once."""
    from keras_ssl.optimizers import LARS

    def make(steps):
        if optimizer == "lars":
            return LARS(0.5, weight_decay=1e-4)
        return keras.optimizers.SGD(0.05, momentum=0.9)

    run, model, _ = _separable_run(folds=3, learning_rate=0.05)
    run.current.optimizer = lambda run, steps: make(steps)
    ends, functions, crops = _fold_ends(run, model)
    assert len(ends) == 3
    assert all(function is functions[0] for function in functions)
    fold = fine_tuning.fold_ids(run.labeled.y, 3, run.config.seed)
    steps = round(run.total_steps * 2 / 3)
    for k, end in enumerate(ends):
        train = fold != k
        model.set_weights(run.start_weights["finetune"])
        model.fit_linear_head(run.labeled.x[train], run.labeled.y[train])
        model.compile(optimizer=make(steps))
        for variable, value in zip(model.augment.variables, crops[k]):
            variable.assign(value)
        stream = ssl_data.from_arrays(
            run.labeled.x[train],
            run.labeled.y[train],
            batch_size=8,
            seed=run.config.seed + 1 + k,
            repeat=True,
        )
        model.fit(
            stream, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False
        )
        for got, expected in zip(end, _values(model)):
            np.testing.assert_array_equal(got, expected, err_msg=f"fold {k}")


def test_cross_validation_ties_go_to_the_smaller_share():
    # A rate too small to change any prediction: every share ties.
    run, model, _ = _separable_run(folds=2, learning_rate=1e-9)
    share, scores = _cross_validated_share(run, model)
    assert len(set(scores.values())) == 1
    assert share == 0.0


def test_too_few_labeled_images_for_the_folds_fail_before_training():
    run = _run(0.5, folds=7)
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
    with pytest.raises(ValueError, match="interpolation_folds=7"):
        stages.linear_head_first(run, model)


def test_the_share_is_the_smallest_within_one_standard_error():
    # 250 labels: one image's difference (0.4 points) is far below one
    # standard error (3 points); the probe's share is kept.
    near = {0.0: 0.668, 0.25: 0.668, 0.5: 0.672, 0.75: 0.640, 1.0: 0.624}
    assert fine_tuning.choose_share(near, 250) == 0.0
    # 4,000 labels: a gain of 2 points is over two standard errors.
    gain = {0.0: 0.50, 0.25: 0.51, 0.5: 0.515, 0.75: 0.52, 1.0: 0.50}
    error = np.sqrt(0.52 * 0.48 / 4000)
    assert 0.52 - 0.515 < error < 0.52 - 0.51
    assert fine_tuning.choose_share(gain, 4000) == 0.5
    assert fine_tuning.choose_share({0.0: 0.9, 1.0: 0.9}, 10) == 0.0


def test_lp_ft_scales_every_step_by_its_trust_ratio():
    """With BatchNorm's statistics kept (LP-FT), BatchNorm's scale and
    offset and the biases take trust-ratio steps too; the from-scratch
    baseline (batch statistics) keeps SimCLR's exclusion."""
    from keras_ssl.recipes import paws

    by_name = {stage.name: stage for stage in paws.STAGES}
    for lp_ft, adapted in ((True, True), (False, False)):
        config = paws.PAWSConfig.digits(linear_probe_first=lp_ft)
        run = types.SimpleNamespace(
            config=config,
            labeled=types.SimpleNamespace(y=np.zeros(20, "int32")),
            splits=types.SimpleNamespace(num_classes=3, num_labeled=20),
            models={"pretrainer": types.SimpleNamespace(encoder=None)},
            sync=False,
        )
        run.models["pretrainer"].encoder = stages.encoder(run)
        # The stages' own models, as the runner keeps them by role.
        run.models["finetuner"] = stages.fine_tuner(run)
        run.models["baseline"] = by_name["baseline"].build(run)
        assert run.models["finetuner"].frozen_batch_norm is lp_ft
        finetune = by_name["finetune"].optimizer(run, 10)
        baseline = by_name["baseline"].optimizer(run, 10)
        assert finetune.exclude_rank_1 is not adapted
        assert baseline.exclude_rank_1 is True


def test_fine_tuning_functions_work_without_a_recipe():
    """LP-FT then WiSE-FT on a FineTuner and arrays alone."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 16, 16, 3)).astype("uint8")
    y = np.arange(12) % 3
    keras.utils.set_random_seed(0)
    model = FineTuner(
        tiny_encoder(), num_classes=3, ft_layer=0, frozen_batch_norm=True
    )
    with pytest.raises(ValueError, match="folds=7"):
        fine_tuning.linear_head_first(model, x, y, folds=7)
    start = fine_tuning.linear_head_first(model, x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, epochs=2, verbose=0)
    trained = _values(model)
    fine_tuning.interpolate_with_start(model, start, 0.5)
    for variable, first, last in zip(model.weights, start, trained):
        if keras.backend.is_float_dtype(variable.dtype):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(variable),
                0.5 * first + 0.5 * last,
                rtol=1e-6,
                atol=1e-7,
            )
