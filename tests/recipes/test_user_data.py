"""A recipe on the user's own arrays: labeled indices, an unlabeled pool,
stage step budgets, the report with its baselines, and the precision."""

import json
import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.checkpoints import StaleStageError
from keras_ssl.recipes.runner import schedule

TINY = dict(
    image_size=8,
    width_multiplier=0.125,
    batch_size=16,
    labeled_batch_size=8,
    finetune_batch_size=10,
    interpolation_folds=0,
    verbose=0,
    export=False,
)


def _gray_digits():
    """28 px gray floats in [0, 1] (as a user might hold them), split."""
    bunch = load_digits()
    images = np.kron(bunch.images / 16.0, np.ones((3, 3)))[:, 1:-2, 1:-2]
    y = bunch.target
    return images[:200], y[:200], images[200:260], y[200:260], images[300:380]


class CountSteps(keras.callbacks.Callback):
    """Training steps of each stage's model, and the dtype policy."""

    def __init__(self):
        super().__init__()
        self.steps = {}
        self.policies = set()

    def on_train_batch_end(self, batch, logs=None):
        name = type(self.model).__name__
        self.steps[name] = self.steps.get(name, 0) + 1
        self.policies.add(keras.config.dtype_policy().name)


def test_schedule_spends_exactly_the_budget():
    assert schedule(3, 2) == (1, 3)
    assert schedule(12, 5) == (2, 6)
    assert schedule(7, 1) == (7, 1)
    assert schedule(7, 2) == (1, 7)
    for total in range(1, 40):
        for per_epoch in range(1, 9):
            epochs, steps = schedule(total, per_epoch)
            assert epochs * steps == total
            assert steps >= min(total, per_epoch)


@pytest.mark.slow
def test_arrays_run_with_budgets_and_an_honest_report(tmp_path):
    x, y, x_test, y_test, unlabeled = _gray_digits()
    indices = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
    counter = CountSteps()
    result = simclrv2.fit(
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        unlabeled=unlabeled,
        labeled_indices=indices[::-1],
        pretrain_steps=3,
        finetune_steps=2,
        distill_steps=1,
        steps_per_epoch=2,
        memory_size=0,
        output_dir=str(tmp_path),
        callbacks=[counter],
        **dict(TINY, interpolation_folds=2),
    )
    assert result.config.dataset == "arrays"
    assert result.data["train"] == 280
    assert result.data["labeled"] == 20
    assert result.data["test"] == 60
    # Each stage ran its budget, whatever the epochs say; the from-scratch
    # baseline ran fine-tuning's.
    assert counter.steps == {
        "SimCLRv2Pretrainer": 3,
        "FineTuner": 2 + 2,
        "Distiller": 1,
    }
    assert len(result.stages["pretrain"].history["loss"]) == 1
    # WiSE-FT's share, chosen by 2-fold cross-validation on the 20 labels.
    share = result.stages["finetune"].metrics["finetune_interpolation"]
    assert share in (0.0, 0.25, 0.5, 0.75, 1.0)
    report = result.report
    with open(tmp_path / "report.json") as f:
        assert json.load(f) == report
    assert os.path.getsize(tmp_path / "report.png") > 0
    assert report["data"] == "the given arrays"
    assert report["labeled_images"] == 20
    rows = {row["what"]: row for row in report["rows"]}
    for what in (
        "k-NN on the encoder's features",
        "linear probe on the encoder's features",
        "fine-tuned (teacher)",
        "distilled (student)",
        "same network from scratch",
        "logistic regression on pixels",
        "1-NN on pixels",
    ):
        assert 0.0 <= rows[what]["test_accuracy"] <= 1.0, what
    groups = {row["group"] for row in report["rows"]}
    assert groups == {"representation", "model", "baseline"}
    # The pixel baselines see the 20 labeled images only: from 2 per
    # class, 1-NN on the digits' pixels is far from perfect.
    assert rows["1-NN on pixels"]["test_accuracy"] < 0.95
    assert "logistic regression on pixels" in result.summary()


@pytest.mark.slow
# bfloat16 set explicitly warns where the CPU only emulates it.
@pytest.mark.filterwarnings(
    "ignore::keras_ssl.recipes.precision.SlowPrecisionWarning"
)
def test_precision_policy_is_applied_restored_and_fingerprinted(tmp_path):
    x, y, x_test, y_test, _ = _gray_digits()
    counter = CountSteps()
    settings = dict(
        TINY,
        x=x[:40],
        y=y[:40],
        x_test=x_test[:10],
        y_test=y_test[:10],
        stages=("pretrain",),
        pretrain_steps=1,
        memory_size=0,
        baselines=False,
        output_dir=str(tmp_path),
    )
    result = simclrv2.fit(precision="bfloat16", callbacks=[counter], **settings)
    assert counter.policies == {"mixed_bfloat16"}
    assert keras.config.dtype_policy().name == "float32"
    assert np.isfinite(result.stages["pretrain"].history["loss"]).all()
    with pytest.raises(StaleStageError, match="precision: 'bfloat16' then"):
        simclrv2.fit(precision="float32", **settings)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize(
    "data, match",
    [
        (dict(labeled_indices=[0, 500]), "labeled_indices"),
        (dict(labeled_indices=[3, 3]), "repeat"),
        (dict(x_test=None), "x_test"),
        (dict(y=np.zeros(7, int)), "`y` must be 200"),
        (dict(x=np.zeros((200, 8, 8, 2))), "C = 1"),
        (dict(unlabeled=np.full((3, 8, 8), 2.0)), "unlabeled"),
    ],
)
def test_bad_user_data_fails_before_training(data, match, tmp_path):
    x, y, x_test, y_test, _ = _gray_digits()
    arrays = dict(x=x, y=y, x_test=x_test, y_test=y_test)
    with pytest.raises(ValueError, match=match):
        simclrv2.fit(output_dir=str(tmp_path), **TINY, **{**arrays, **data})
    assert not os.listdir(tmp_path)


def test_arrays_without_x_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\['y'\] need the training"):
        simclrv2.fit(y=np.zeros(3, int), output_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="dataset='arrays'"):
        simclrv2.fit(dataset="arrays", output_dir=str(tmp_path), **TINY)


def test_folders_of_class_sub_folders_are_read_as_labeled_images(tmp_path):
    from PIL import Image

    from keras_ssl.recipes.datasets import from_user

    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (12, 10), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    splits = from_user(
        str(tmp_path),
        x_test=str(tmp_path),
        unlabeled=np.zeros((4, 5, 5), np.uint8),
        image_size=8,
    )
    assert splits.x_train.shape == (6 + 4, 8, 8, 3)
    assert splits.y_train is None
    np.testing.assert_array_equal(splits.labeled_y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(splits.labeled_indices, np.arange(6))
    np.testing.assert_array_equal(splits.y_test, [0, 0, 0, 1, 1, 1])
    assert splits.num_classes == 2
