"""A recipe's run directory: reuse, refusal of stale stages, non-finite
stops, on a tiny SimCLRv2 pretraining."""

import os

import keras
import numpy as np
import pytest

from keras_ssl.recipes import runner
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.checkpoints import NonFiniteError
from keras_ssl.recipes.checkpoints import StaleStageError

TINY = dict(
    epochs=1,
    steps_per_epoch=1,
    batch_size=16,
    labeled_batch_size=8,
    interpolation_folds=0,
    stages=("pretrain",),
    export=False,
    verbose=0,
)


def _no_data(*args, **kwargs):
    raise AssertionError("the data were loaded")


@pytest.mark.faults
@pytest.mark.slow
def test_stage_is_reused_only_with_the_same_settings(
    tmp_path, capsys, monkeypatch
):
    first = simclrv2.fit(output_dir=str(tmp_path), **TINY)
    again = simclrv2.fit(output_dir=str(tmp_path), **TINY)
    assert "reusing the finished stage" in capsys.readouterr().out
    assert again.stages["pretrain"].reused
    assert again.stages["pretrain"].history == first.stages["pretrain"].history
    # Changed settings are refused before the data are loaded.
    monkeypatch.setattr(runner, "load_data", _no_data)
    for name, old, new in (("epochs", 1, 2), ("temperature", 0.5, 0.2)):
        with pytest.raises(StaleStageError) as error:
            simclrv2.fit(output_dir=str(tmp_path), **dict(TINY, **{name: new}))
        assert f"{name}: {old!r} then, {new!r} now" in str(error.value)
        assert "--overwrite" in str(error.value)
    monkeypatch.undo()
    # With a labeled batch the pretraining reads labels: other labels make
    # it stale (without one it is reused, see the next test).
    with pytest.raises(StaleStageError) as error:
        simclrv2.fit(
            output_dir=str(tmp_path), **dict(TINY, labeled_per_class=3)
        )
    assert "pretrain" in str(error.value)
    assert "then, 30 now" in str(error.value)
    # A failed overwrite leaves no report or export of the stages it
    # deleted; it says what it deletes first.
    (tmp_path / "export" / "pretrainer").mkdir(parents=True)
    assert os.path.exists(tmp_path / "report.json")
    capsys.readouterr()
    with pytest.raises(NonFiniteError):
        simclrv2.fit(
            output_dir=str(tmp_path),
            overwrite=True,
            **dict(TINY, epochs=2, learning_rate=1e30),
        )
    said = capsys.readouterr().out
    assert f"overwrite=True: deleting {tmp_path / 'pretrain'} (made " in said
    assert "epochs: 1 then, 2 now" in said
    assert f"{tmp_path / 'report.json'}" in said
    assert not os.path.exists(tmp_path / "report.json")
    assert not os.path.exists(tmp_path / "export")
    longer = simclrv2.fit(
        output_dir=str(tmp_path), overwrite=True, **dict(TINY, epochs=2)
    )
    assert len(longer.stages["pretrain"].history["loss"]) == 2


class _ConvKernelsAtStart(keras.callbacks.Callback):
    """Notes the convolution kernels of each stage's model as it starts
    training."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        kernels = [w for w in self.model.weights if len(w.shape) == 4]
        self.seen.append([np.array(w) for w in kernels])


@pytest.mark.slow
def test_a_stage_not_chosen_is_loaded_and_pretraining_serves_any_labels(
    tmp_path,
):
    """A chosen stage starts from the finished run of one not chosen,
    never from fresh weights; SimCLRv2's pretraining with no labeled batch
    reads no labels, so a run on other labels reuses it."""
    path = str(tmp_path)
    tiny = dict(TINY, labeled_batch_size=0, stages=("pretrain", "finetune"))
    tiny.update(finetune_epochs=1, baselines=False)
    only_finetune = dict(tiny, stages=("finetune",))
    with pytest.raises(ValueError, match="stage 'pretrain', which is not in"):
        simclrv2.fit(output_dir=path, **only_finetune)
    assert os.listdir(path) == ["run.lock"]  # empty: released

    seen = _ConvKernelsAtStart()
    first = simclrv2.fit(
        output_dir=path, labeled_per_class=2, callbacks=[seen], **tiny
    )
    with pytest.raises(StaleStageError) as error:
        simclrv2.fit(output_dir=path, labeled_per_class=4, **tiny)
    assert "finetune" in str(error.value)
    assert "data labeled: 20 then, 40 now" in str(error.value)
    other = simclrv2.fit(
        output_dir=path,
        labeled_per_class=4,
        overwrite=True,
        callbacks=[seen],
        **only_finetune,
    )
    assert other.stages["pretrain"].reused
    assert not other.stages["finetune"].reused
    assert other.stages["pretrain"].history == first.stages["pretrain"].history
    # Pretraining, then fine-tuning (first run); fine-tuning (second run)
    # starts from the same pretrained kernels, not from fresh ones.
    pretrain_start, finetune_start, loaded_start = seen.seen
    for a, b in zip(finetune_start, loaded_start, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(pretrain_start[0], finetune_start[0])

    # A stage that is not chosen is never retrained, `overwrite` or not.
    with pytest.raises(StaleStageError, match="loaded, never retrained"):
        simclrv2.fit(
            output_dir=path,
            labeled_per_class=4,
            overwrite=True,
            **dict(only_finetune, temperature=0.2),
        )
    assert os.path.exists(os.path.join(path, "pretrain", "final.weights.h5"))


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


def test_command_line_mistakes_are_refused_before_the_data(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(runner, "load_data", _no_data)
    path = str(tmp_path / "run")
    with pytest.raises(ValueError, match="`data_dir` is not a folder") as error:
        simclrv2.fit(output_dir=path, data_dir="/nonexistent", **TINY)
    assert "Received: data_dir='/nonexistent'" in str(error.value)
    assert not os.path.exists(path)
    with pytest.warns(UserWarning, match="`data_dir` is not read"):
        with pytest.raises(AssertionError, match="the data were loaded"):
            simclrv2.fit(output_dir=path, data_dir=str(tmp_path), **TINY)
    # Distillation starts from fine-tuning, chosen but given no steps.
    with pytest.raises(ValueError) as error:
        simclrv2.fit(
            output_dir=path,
            **dict(TINY, stages=("finetune", "distill"), finetune_steps=0),
        )
    message = str(error.value)
    assert "stage 'finetune', which is in `stages` but does not train" in (
        message
    )
    assert "(received: finetune_steps=0)" in message
    assert "give 'finetune' a budget (`finetune_steps` > 0)" in message
    assert "is not in `stages`" not in message
