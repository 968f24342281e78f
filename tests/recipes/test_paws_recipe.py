import importlib.util
import os

import numpy as np
import pytest

from keras_ssl.recipes import paws
from tests.evaluation.test_tensorboard_images import read_summaries

TINY = dict(
    epochs=1,
    steps_per_epoch=2,
    batch_size=16,
    images_per_class=2,
    finetune_epochs=1,
    interpolation_folds=0,
    baselines=False,
    verbose=0,
)


@pytest.mark.slow
def test_pretrain_paws_nn_finetune_export(tmp_path):
    result = paws.fit(output_dir=str(tmp_path), **TINY)
    history = result.stages["pretrain"].history
    for name in ("loss", "me_max", "target_confidence", "support_accuracy"):
        assert np.isfinite(history[name]).all(), name
    for stage, name in (
        ("pretrain", "paws_nn_accuracy"),
        ("finetune", "test_accuracy"),
    ):
        assert 0.0 <= result.stages[stage].metrics[name] <= 1.0
    assert set(result.exports) == {"pretrainer", "finetuner"}
    for path in result.exports.values():
        assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert result.export_path == result.exports["finetuner"]
    # TensorBoard: the views of the first images and the k-NN curve in
    # the pretraining's log, the report's chart beside the stages'.
    logs = read_summaries(os.path.join(str(tmp_path), "pretrain", "logs"))
    ((step, grid),) = logs["views"]
    assert step == 0 and grid.ndim == 3 and grid.shape[-1] == 3
    curve = logs["epoch_labeled_knn_accuracy"]
    assert len(curve) == TINY["epochs"] and 0 <= curve[0][1] <= 1
    if importlib.util.find_spec("matplotlib"):
        report = read_summaries(os.path.join(str(tmp_path), "logs"))
        assert report["report"][0][1].ndim == 3


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"classes_per_batch": 11}, "classes_per_batch"),
        ({"images_per_class": 11}, "images_per_class"),
        ({"sharpen_temperature": 0.0}, "sharpen_temperature=0.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"stages": ("pretrain", "linear")}, "linear"),
    ],
)
def test_bad_config_fails_before_training(overrides, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        paws.fit(output_dir=str(tmp_path), **dict(TINY, **overrides))
    assert not os.path.exists(tmp_path / "pretrain")
