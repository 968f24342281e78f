"""Faults of a recipe run in real processes: kill -9 in every stage after
its first backup (the resumed run ends with an uninterrupted one's weights,
bit for bit), two runs on one `output_dir`, and a disk that fills up while
the final weights are written."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from keras_ssl.recipes import simclrv2

    output_dir, kill = sys.argv[1], sys.argv[2]

    def stage_in_progress():
        # The stages run one after the other: the one being trained is
        # the one with a fingerprint and no final weights.
        for name in sorted(os.listdir(output_dir)):
            folder = os.path.join(output_dir, name)
            if os.path.exists(os.path.join(folder, "fingerprint.json")) and (
                not os.path.exists(os.path.join(folder, "final.weights.h5"))
            ):
                return name

    class Kill(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.stage = stage_in_progress()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            here = (self.stage, self.epoch, batch)
            if ":".join(map(str, here)) == kill:
                os.kill(os.getpid(), signal.SIGKILL)

    simclrv2.fit(
        output_dir=output_dir, callbacks=[Kill()], epochs=2,
        steps_per_epoch=2, batch_size=16, labeled_batch_size=8,
        memory_size=40, finetune_batch_size=20, finetune_epochs=2,
        distill_epochs=2, interpolation_folds=0, baselines=True,
        export=False, verbose=0,
    )
    """
)

ENV = dict(
    os.environ,
    KERAS_BACKEND="tensorflow",
    TF_CPP_MIN_LOG_LEVEL="3",
    # A killed process loses what it had not flushed.
    PYTHONUNBUFFERED="1",
)


def _run(output_dir, kill="none"):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(output_dir), kill],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def _arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return arrays


STAGES = ("pretrain", "finetune", "distill", "baseline")


def test_kill_9_after_each_stages_first_backup_resumes_bitwise(tmp_path):
    """Every stage, in the order they run, is killed after its first
    backup (epoch 2, step 1) and resumed from it: pretraining (random
    views), fine-tuning, distillation and the from-scratch baseline
    (random crops of `FineTuner`); all end with the uninterrupted run's
    weights and histories."""
    straight = _run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed_dir = tmp_path / "killed"
    before = None
    for stage in STAGES:
        killed = _run(killed_dir, f"{stage}:1:0")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert os.listdir(killed_dir / stage / "backup") == ["epoch_1"]
        if before is not None:
            # The stage killed by the run before resumed from its backup.
            resumed = f"Stage '{before}': resumed from the backup of epoch 1"
            assert resumed in killed.stdout, killed.stdout[-2000:]
        before = stage
    resumed = _run(killed_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Stage '{before}': resumed from the backup of epoch 1" in (
        resumed.stdout
    )
    for stage in STAGES:
        a = _arrays(tmp_path / "straight" / stage / "final.weights.h5")
        b = _arrays(killed_dir / stage / "final.weights.h5")
        assert a.keys() == b.keys() and a, stage
        for name in a:
            np.testing.assert_array_equal(
                a[name], b[name], err_msg=f"{stage}: {name}"
            )
        history = killed_dir / stage / "history.json"
        assert (
            history.read_text()
            == (tmp_path / "straight" / stage / "history.json").read_text()
        ), stage


HOLD = textwrap.dedent(
    """
    import sys, time
    from keras_ssl.recipes.checkpoints import RunLock

    lock = RunLock(sys.argv[1]).acquire()
    print("holding", flush=True)
    time.sleep(600)
    """
)


def _wait_for(process, line, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        text = process.stdout.readline()
        if text.strip() == line:
            return
        if process.poll() is not None:
            break
    raise AssertionError(
        f"no {line!r} from the process: {process.stderr.read()[-2000:]}"
    )


def test_a_second_run_refuses_a_held_output_dir_and_takes_a_dead_ones(
    tmp_path, capsys
):
    from keras_ssl.recipes import checkpoints

    output_dir = tmp_path / "run"
    stage = output_dir / "pretrain"
    stage.mkdir(parents=True)
    (stage / "fingerprint.json").write_text('{"fields": {"epochs": 99}}')
    (stage / "final.weights.h5").write_text("weights of the live run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(output_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        _wait_for(holder, "holding")
        # The same command line twice, the second with --overwrite: it
        # must neither train nor delete what the live run holds.
        second = subprocess.run(
            [sys.executable, "-m", "keras_ssl.recipes.simclrv2"]
            + ["--output_dir", str(output_dir), "--overwrite", "true"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        assert second.returncode == 1
        assert "RunLockedError" in second.stderr
        message = second.stderr.strip().splitlines()[-1]
        assert f"{output_dir} is in use by another run" in message
        assert f"pid {holder.pid} on {os.uname().nodename}" in message
        assert f"{sys.executable} -c {output_dir}" in message
        assert sorted(os.listdir(stage)) == [
            "final.weights.h5",
            "fingerprint.json",
        ]
        assert not os.path.exists(output_dir / "report.json")
        with pytest.raises(checkpoints.RunLockedError, match=str(holder.pid)):
            checkpoints.RunLock(str(output_dir)).acquire()
    finally:
        holder.kill()
        holder.communicate()
    # The holder died without releasing: its record is recognised and
    # the lock taken over.
    lock = checkpoints.RunLock(str(output_dir))
    with lock:
        record = (output_dir / "run.lock").read_text()
        assert f'"pid": {os.getpid()}' in record
    taken = capsys.readouterr().out
    assert "taking over the lock of a run that ended" in taken
    assert f"pid {holder.pid}" in taken
    assert (output_dir / "run.lock").read_text() == ""


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    import keras
    import numpy as np
    from keras_ssl import data as ssl_data
    from keras_ssl.recipes import checkpoints

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(512), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    stream = ssl_data.from_arrays(
        rng.random((16, 4, 4, 3)).astype("float32"),
        rng.integers(0, 3, 16).astype("int32"), batch_size=8, seed=0,
        repeat=True)
    write = checkpoints.save_weights

    def full_disk(model, path):
        # From here on every write past 4 KiB fails (EFBIG), as on a
        # full disk: the HDF5 file is left half-written.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        write(model, path)

    checkpoints.save_weights = full_disk
    if sys.argv[2] == "mid-write":
        # The disk fills up after the check for room: HDF5's write fails
        # half-way and leaves its file open.
        checkpoints._check_space = lambda model, path: None
    checkpoints.fit_stage("pretrain", model, stream, epochs=1, steps=2,
                          stage_dir=sys.argv[1], verbose=0, callbacks=())
    """
)


@pytest.mark.parametrize("when", ["before", "mid-write"])
def test_a_full_disk_at_the_final_weights_exits_with_its_error(tmp_path, when):
    """The failed write's error names the file and the process exits with
    status 1. Before, HDF5 crashed it (status 139) when it closed the file
    it had left open, on the way out."""
    process = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path), when],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert process.returncode == 1, process.stderr[-3000:]
    last = process.stderr.strip().splitlines()[-1]
    final = os.path.join(str(tmp_path), "final.weights.h5")
    assert last == (
        f"OSError: [Errno 27] {final} could not be written (File too "
        "large); the previous file, if any, is unchanged"
    )
    assert "Exception ignored" not in process.stderr
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
