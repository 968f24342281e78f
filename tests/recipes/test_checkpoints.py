"""Stage directories: fingerprints, atomic files, backups, non-finite stops,
with a tiny classifier instead of a recipe's networks."""

import json
import os

import keras
import numpy as np
import pytest

from keras_ssl import data as ssl_data
from keras_ssl.recipes import checkpoints


def _model(learning_rate=0.01):
    model = keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _stream():
    rng = np.random.default_rng(0)
    x = rng.random((32, 4, 4, 3)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    return ssl_data.from_arrays(x, y, batch_size=8, seed=0, repeat=True)


def _fit(model, stage_dir, epochs=3, callbacks=()):
    return checkpoints.fit_stage(
        "pretrain",
        model,
        _stream(),
        epochs=epochs,
        steps=2,
        stage_dir=str(stage_dir),
        verbose=0,
        callbacks=callbacks,
    )


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


FINGERPRINT = {"fields": {"epochs": 6, "seed": 0}, "data": {"hash": "a"}}


class TestPrepare:
    def test_new_then_resume_then_finished(self, tmp_path):
        stage = str(tmp_path / "s")
        assert checkpoints.prepare(stage, FINGERPRINT, False) == "new"
        assert checkpoints.prepare(stage, FINGERPRINT, False) == "resume"
        checkpoints.save_weights(_model(), f"{stage}/final.weights.h5")
        checkpoints.write_json(f"{stage}/history.json", {"loss": [1.0]})
        assert checkpoints.prepare(stage, FINGERPRINT, False) == "finished"

    def test_changed_settings_are_refused_with_the_differences(self, tmp_path):
        stage = str(tmp_path / "s")
        checkpoints.prepare(stage, FINGERPRINT, False)
        changed = {"fields": {"epochs": 8, "seed": 0}, "data": {"hash": "b"}}
        with pytest.raises(checkpoints.StaleStageError) as error:
            checkpoints.prepare(stage, changed, False)
        message = str(error.value)
        assert "epochs: 6 then, 8 now" in message
        assert "data hash: 'a' then, 'b' now" in message
        assert "new `output_dir`" in message and "--overwrite" in message
        assert checkpoints.prepare(stage, changed, True) == "new"
        saved = json.loads((tmp_path / "s" / "fingerprint.json").read_text())
        assert saved["fields"]["epochs"] == 8

    def test_a_stage_without_fingerprint_is_refused(self, tmp_path):
        (tmp_path / "s").mkdir()
        (tmp_path / "s" / "final.weights.h5").write_text("old")
        with pytest.raises(ValueError, match="no record of the settings"):
            checkpoints.prepare(str(tmp_path / "s"), FINGERPRINT, False)


@pytest.mark.faults
class TestAtomicWrites:
    def test_failed_write_leaves_the_old_file(self, tmp_path):
        path = str(tmp_path / "history.json")
        checkpoints.write_json(path, {"loss": [1.0]})

        def fail(temporary):
            with open(temporary, "w") as f:
                f.write('{"loss": [')
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError, match="No space"):
            checkpoints.atomic_write(path, fail)
        assert checkpoints.read_json(path) == {"loss": [1.0]}
        assert os.listdir(tmp_path) == ["history.json"]

    def test_failed_weights_write_keeps_the_last_backup(
        self, tmp_path, monkeypatch
    ):
        model = _model()
        with pytest.raises(KeyboardInterrupt):
            _fit(model, tmp_path, callbacks=[StopAfter(2)])
        saved = _weights(model)

        def full_disk(path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"\x89HDF\r\n")
            raise OSError(28, "No space left on device")

        # The third epoch's backup fails half-written.
        monkeypatch.setattr(model, "save_weights", full_disk)
        with pytest.raises(OSError, match="No space"):
            _fit(model, tmp_path)
        monkeypatch.undo()
        backups = sorted(os.listdir(tmp_path / "backup"))
        assert backups == ["epoch_1", "epoch_2"]
        fresh = _model()
        epoch, history = checkpoints.Backups(str(tmp_path / "backup")).restore(
            fresh
        )
        assert epoch == 2 and len(history["loss"]) == 2
        for a, b in zip(saved, _weights(fresh)):
            np.testing.assert_array_equal(a, b)

    def test_damaged_backup_is_set_aside_and_the_older_one_used(self, tmp_path):
        model = _model()
        with pytest.raises(KeyboardInterrupt):
            _fit(model, tmp_path, callbacks=[StopAfter(2)])
        newest = tmp_path / "backup" / "epoch_2" / "backup.weights.h5"
        newest.write_bytes(newest.read_bytes()[:200])
        with pytest.warns(RuntimeWarning, match="cannot be read"):
            result = _fit(_model(), tmp_path)
        assert result.resumed_from == 1
        assert len(result.history["loss"]) == 3
        assert not os.path.exists(tmp_path / "backup")


@pytest.mark.faults
class TestHistoryAndNonFinite:
    def test_resumed_history_keeps_every_epoch(self, tmp_path):
        with pytest.raises(KeyboardInterrupt):
            _fit(_model(), tmp_path, callbacks=[StopAfter(2)])
        result = _fit(_model(), tmp_path)
        assert result.resumed_from == 2
        assert len(result.history["loss"]) == 3
        saved = checkpoints.read_json(str(tmp_path / "history.json"))
        assert saved == result.history

    def test_non_finite_loss_stops_and_keeps_the_last_finite_backup(
        self, tmp_path
    ):
        class Explode(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    self.model.optimizer.learning_rate.assign(1e38)

        with pytest.raises(checkpoints.NonFiniteError) as error:
            _fit(_model(), tmp_path, epochs=4, callbacks=[Explode()])
        message = str(error.value)
        assert "Stage 'pretrain' went non-finite in epoch 3" in message
        assert "learning rate" in message
        assert not os.path.exists(tmp_path / "final.weights.h5")
        restored = _model()
        epoch, _ = checkpoints.Backups(str(tmp_path / "backup")).restore(
            restored
        )
        assert epoch == 2
        checkpoints.check_finite(restored, "restored")


def _finished_stage(tmp_path):
    """A stage directory with a finished tiny stage."""
    stage = str(tmp_path / "s")
    assert checkpoints.prepare(stage, FINGERPRINT, False) == "new"
    _fit(_model(), stage, epochs=2)
    return stage


@pytest.mark.faults
class TestDamagedFiles:
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_truncated_final_weights_are_set_aside_and_trained_again(
        self, tmp_path, overwrite
    ):
        stage = _finished_stage(tmp_path)
        final = os.path.join(stage, "final.weights.h5")
        head = (tmp_path / "s" / "final.weights.h5").read_bytes()[:300]
        (tmp_path / "s" / "final.weights.h5").write_bytes(head)
        with pytest.warns(RuntimeWarning) as caught:
            status = checkpoints.prepare(stage, FINGERPRINT, overwrite)
        assert status == "resume"
        (warning,) = caught
        assert str(warning.message).startswith(f"{final} cannot be read (")
        aside = tmp_path / "s" / "damaged_final.weights.h5"
        assert f"set aside as {aside} " in str(warning.message)
        assert aside.read_bytes() == head
        result = _fit(_model(), stage, epochs=2)
        assert not result.reused and len(result.history["loss"]) == 2
        assert checkpoints.damage(stage) == []
        assert checkpoints.prepare(stage, FINGERPRINT, False) == "finished"

    def test_truncated_history_is_not_accepted(self, tmp_path):
        stage = _finished_stage(tmp_path)
        history = tmp_path / "s" / "history.json"
        text = history.read_text()
        history.write_text(text[: len(text) // 2])
        with pytest.warns(RuntimeWarning, match="history.json cannot be read"):
            assert checkpoints.prepare(stage, FINGERPRINT, False) == "resume"
        assert os.path.exists(os.path.join(stage, "damaged_history.json"))
        result = _fit(_model(), stage, epochs=2)
        assert json.loads(history.read_text()) == result.history

    def test_a_killed_first_fingerprint_write_is_an_unfinished_stage(
        self, tmp_path
    ):
        stage = tmp_path / "s"
        stage.mkdir()
        (stage / ".tmp4242-fingerprint.json").write_text('{"fields": {"ep')
        assert checkpoints.prepare(str(stage), FINGERPRINT, False) == "new"
        assert os.listdir(stage) == ["fingerprint.json"]

    def test_a_damaged_fingerprint_is_named(self, tmp_path):
        stage = _finished_stage(tmp_path)
        (tmp_path / "s" / "fingerprint.json").write_text('{"fields": {')
        with pytest.raises(
            checkpoints.StaleStageError, match="fingerprint.json cannot be read"
        ):
            checkpoints.prepare(stage, FINGERPRINT, False)

    def test_overwrite_says_what_it_deletes_before_deleting(self, tmp_path):
        stage = _finished_stage(tmp_path)
        seen = []

        def on_delete(folder, differences):
            seen.append((folder, differences, sorted(os.listdir(folder))))

        changed = {"fields": {"epochs": 8, "seed": 0}, "data": {"hash": "a"}}
        assert checkpoints.prepare(stage, changed, True, on_delete=on_delete)
        ((folder, differences, present),) = seen
        assert folder == stage and differences == ["epochs: 6 then, 8 now"]
        assert "final.weights.h5" in present
        assert os.listdir(stage) == ["fingerprint.json"]


@pytest.mark.faults
class TestDurableWrites:
    def test_weights_reach_the_disk_before_they_are_renamed(
        self, tmp_path, monkeypatch
    ):
        events = []
        fsync, replace = os.fsync, os.replace

        def recording_fsync(descriptor):
            events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
            return fsync(descriptor)

        def recording_replace(source, target):
            events.append(("replace", str(source)))
            return replace(source, target)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        monkeypatch.setattr(os, "replace", recording_replace)
        model = _model()
        path = str(tmp_path / "final.weights.h5")
        checkpoints.save_weights(model, path)
        (temporary,) = [p for e, p in events if e == "replace"]
        assert temporary.endswith("-final.weights.h5")
        assert events.index(("fsync", temporary)) < events.index(
            ("replace", temporary)
        )
        assert events[-1] == ("fsync", str(tmp_path))
        events.clear()
        checkpoints.Backups(str(tmp_path / "backup")).save(model, 1, {})
        synced = [os.path.basename(p) for e, p in events if e == "fsync"]
        assert "backup.weights.h5" in synced and "backup" in synced

    def test_a_full_disk_is_refused_before_hdf5_writes(
        self, tmp_path, monkeypatch
    ):
        calls = []
        model = _model()
        monkeypatch.setattr(model, "save_weights", calls.append)
        free = os.statvfs(str(tmp_path))
        monkeypatch.setattr(
            os,
            "statvfs",
            lambda path: os.statvfs_result(free[:4] + (0,) + free[5:]),
        )
        path = str(tmp_path / "final.weights.h5")
        with pytest.raises(OSError) as error:
            checkpoints.save_weights(model, path)
        assert error.value.errno == 28
        assert str(error.value) == (
            f"[Errno 28] {path} could not be written (No space left on "
            "device); the previous file, if any, is unchanged"
        )
        assert calls == [] and os.listdir(tmp_path) == []


class TestRunLock:
    def test_a_second_holder_is_refused_with_the_first_named(self, tmp_path):
        first = checkpoints.RunLock(str(tmp_path)).acquire()
        try:
            with pytest.raises(checkpoints.RunLockedError) as error:
                checkpoints.RunLock(str(tmp_path)).acquire()
            message = str(error.value)
            assert f"{tmp_path} is in use by another run" in message
            assert f"pid {os.getpid()} on {os.uname().nodename}" in message
            assert isinstance(error.value, ValueError)
        finally:
            first.release()
        with checkpoints.RunLock(str(tmp_path)):
            pass
        assert (tmp_path / "run.lock").read_text() == ""

    def test_each_worker_of_a_multi_worker_run_has_its_own_lock(
        self, monkeypatch
    ):
        assert checkpoints.lock_name() == "run.lock"
        config = '{"cluster": {}, "task": {"type": "worker", "index": 1}}'
        monkeypatch.setenv("TF_CONFIG", config)
        assert checkpoints.lock_name() == "run-worker-1.lock"


@pytest.mark.faults
def test_a_backup_restores_fine_tunings_crop_generator(tmp_path):
    """`FineTuner`'s crops come from a seed generator that Keras leaves out
    of saved weights; the backup keeps it, so a resumed fine-tuning draws
    the crops an uninterrupted one draws."""
    from keras_ssl.models import FineTuner

    def fine_tuner():
        images = keras.Input((8, 8, 3))
        features = keras.layers.Conv2D(4, 3)(images)
        features = keras.layers.GlobalAveragePooling2D()(features)
        encoder = keras.Model(images, features)
        model = FineTuner(encoder, num_classes=3, crop_scale=(0.3, 1.0), seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        return model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 8, 8, 3)).astype("uint8")
    y = rng.integers(0, 3, 16).astype("int32")
    trained = fine_tuner()
    trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    backups = checkpoints.Backups(str(tmp_path))
    backups.save(trained, 1, {"loss": [1.0]})
    resumed = fine_tuner()
    resumed.optimizer.build(resumed.trainable_variables)
    assert backups.restore(resumed)[0] == 1
    states = [
        (a, b)
        for a, b in zip(trained.variables, resumed.variables)
        if a.path.endswith("seed_generator_state")
    ]
    assert states
    for a, b in states:
        np.testing.assert_array_equal(np.array(a), np.array(b), a.path)
    # The next crops are the same.
    images = keras.ops.convert_to_tensor(x[:4].astype("float32") / 255)
    np.testing.assert_array_equal(
        np.array(trained.augment(images, training=True)),
        np.array(resumed.augment(images, training=True)),
    )
