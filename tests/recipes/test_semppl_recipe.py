import os

import numpy as np
import pytest

from keras_ssl.recipes import semppl
from keras_ssl.recipes.runner import load_data

TINY = dict(
    epochs=1,
    steps_per_epoch=2,
    batch_size=16,
    labeled_batch_size=8,
    finetune_epochs=1,
    interpolation_folds=0,
    baselines=False,
    verbose=0,
)


@pytest.mark.slow
def test_pretrain_knn_finetune_export(tmp_path):
    result = semppl.fit(output_dir=str(tmp_path), **TINY)
    history = result.stages["pretrain"].history
    for name in ("loss", "semantic_positive_coverage", "invariance_loss"):
        assert np.isfinite(history[name]).all(), name
    # The digits have labels, so the pseudo-labels are monitored.
    for fraction in (25, 50, 75, 100):
        for kind in ("precision", "recall"):
            values = np.array(history[f"pseudo_label_{kind}_{fraction}"])
            assert np.all((values >= 0.0) & (values <= 1.0)), (kind, values)
    # Every pseudo-label reaches the lowest threshold: recall@25 = accuracy.
    np.testing.assert_allclose(
        history["pseudo_label_recall_25"], history["pseudo_label_accuracy"]
    )
    assert 0.0 <= result.stages["pretrain"].metrics["knn_accuracy"] <= 1.0
    assert 0.0 <= result.stages["finetune"].metrics["test_accuracy"] <= 1.0
    assert set(result.exports) == {"pretrainer", "finetuner"}
    for path in result.exports.values():
        assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert result.export_path == result.exports["finetuner"]


@pytest.mark.parametrize("monitor", [True, False])
def test_pretrain_stream_carries_labels_for_monitoring_only(monitor):
    config = semppl.SemPPLConfig.digits(monitor_pseudo_labels=monitor, **TINY)
    splits, _ = load_data(config)
    stream = semppl.pretrain_stream(config, splits)
    batch = stream[3]
    assert batch["unlabeled"].shape == (16, 16, 16, 3)
    assert batch["labeled"].shape == (8, 16, 16, 3)
    if not monitor:
        assert "unlabeled_labels" not in batch
        return
    labels_of = {}
    for image, label in zip(splits.x_train, splits.y_train):
        labels_of.setdefault(image.tobytes(), set()).add(int(label))
    assert batch["unlabeled_labels"].dtype == np.int32
    for image, label in zip(batch["unlabeled"], batch["unlabeled_labels"]):
        assert int(label) in labels_of[image.tobytes()]
    # The images are the same with or without monitoring.
    other = semppl.pretrain_stream(
        semppl.SemPPLConfig.digits(monitor_pseudo_labels=False, **TINY),
        splits,
    )
    for key, value in other[3].items():
        np.testing.assert_array_equal(batch[key], value)


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
