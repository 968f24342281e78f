import os

import numpy as np
import pytest

from keras_ssl.recipes import semppl

TINY = dict(
    epochs=1,
    steps_per_epoch=2,
    batch_size=16,
    labeled_batch_size=8,
    finetune_epochs=1,
    verbose=0,
)


@pytest.mark.slow
def test_pretrain_knn_finetune_export(tmp_path):
    result = semppl.fit(output_dir=str(tmp_path), **TINY)
    history = result.stages["pretrain"].history
    for name in ("loss", "semantic_positive_coverage", "invariance_loss"):
        assert np.isfinite(history[name]).all(), name
    assert 0.0 <= result.stages["pretrain"].metrics["knn_accuracy"] <= 1.0
    assert 0.0 <= result.stages["finetune"].metrics["test_accuracy"] <= 1.0
    assert os.path.exists(os.path.join(result.export_path, "saved_model.pb"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"labeled_batch_size": 0}, "labeled_batch_size=0"),
        ({"alpha": -0.1}, "alpha"),
        ({"k": 10**9}, "k"),
        ({"stages": ("pretrain", "linear")}, "linear"),
    ],
)
def test_bad_config_fails_before_training(overrides, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        semppl.fit(output_dir=str(tmp_path), **dict(TINY, **overrides))
    assert not os.path.exists(tmp_path / "pretrain")
