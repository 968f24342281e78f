"""A recipe's run directory: reuse, refusal of stale stages, non-finite
stops, on a tiny SimCLRv2 pretraining."""

import os

import numpy as np
import pytest

from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.checkpoints import NonFiniteError
from keras_ssl.recipes.checkpoints import StaleStageError

TINY = dict(
    epochs=1,
    steps_per_epoch=1,
    batch_size=16,
    labeled_batch_size=8,
    stages=("pretrain",),
    export=False,
    verbose=0,
)


@pytest.mark.faults
@pytest.mark.slow
def test_stage_is_reused_only_with_the_same_settings(tmp_path, capsys):
    first = simclrv2.fit(output_dir=str(tmp_path), **TINY)
    again = simclrv2.fit(output_dir=str(tmp_path), **TINY)
    assert "reusing the finished stage" in capsys.readouterr().out
    assert again.stages["pretrain"].reused
    assert again.stages["pretrain"].history == first.stages["pretrain"].history
    for name, old, new in (("epochs", 1, 2), ("temperature", 0.5, 0.2)):
        with pytest.raises(StaleStageError) as error:
            simclrv2.fit(output_dir=str(tmp_path), **dict(TINY, **{name: new}))
        assert f"{name}: {old!r} then, {new!r} now" in str(error.value)
        assert "--overwrite" in str(error.value)
    # With a labeled batch the pretraining reads labels: other labels make
    # it stale (without one it is reused, see the next test).
    with pytest.raises(StaleStageError) as error:
        simclrv2.fit(
            output_dir=str(tmp_path), **dict(TINY, labeled_per_class=3)
        )
    assert "pretrain" in str(error.value)
    assert "then, 30 now" in str(error.value)
    longer = simclrv2.fit(
        output_dir=str(tmp_path), overwrite=True, **dict(TINY, epochs=2)
    )
    assert len(longer.stages["pretrain"].history["loss"]) == 2


@pytest.mark.slow
def test_a_pretraining_without_labels_serves_every_labeled_subset(tmp_path):
    """SimCLRv2's pretraining with no labeled batch reads no labels: a run
    on other labels reuses it and retrains what does read them."""
    tiny = dict(TINY, labeled_batch_size=0, stages=("pretrain", "finetune"))
    tiny.update(finetune_epochs=1, baselines=False)
    first = simclrv2.fit(output_dir=str(tmp_path), labeled_per_class=2, **tiny)
    with pytest.raises(StaleStageError) as error:
        simclrv2.fit(output_dir=str(tmp_path), labeled_per_class=4, **tiny)
    assert "finetune" in str(error.value)
    assert "data labeled: 20 then, 40 now" in str(error.value)
    other = simclrv2.fit(
        output_dir=str(tmp_path), labeled_per_class=4, overwrite=True, **tiny
    )
    assert other.stages["pretrain"].reused
    assert not other.stages["finetune"].reused
    assert other.stages["pretrain"].history == first.stages["pretrain"].history


@pytest.mark.faults
@pytest.mark.slow
def test_non_finite_training_stops_and_exports_nothing(tmp_path):
    with pytest.raises(NonFiniteError, match="Stage 'pretrain'") as error:
        simclrv2.fit(
            output_dir=str(tmp_path),
            **dict(TINY, epochs=3, learning_rate=1e30, export=True),
        )
    assert "epoch 1" in str(error.value) or "epoch 2" in str(error.value)
    assert not os.path.exists(tmp_path / "export")
    assert not os.path.exists(tmp_path / "pretrain" / "final.weights.h5")
    assert np.all(
        [not name.startswith(".tmp") for name in os.listdir(tmp_path)]
    )
