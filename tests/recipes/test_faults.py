"""kill -9 at points of each SimCLRv2 stage: the resumed run ends with the
weights of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import textwrap

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
    stage_of = {"SimCLRv2Pretrainer": "pretrain", "FineTuner": "finetune",
                "Distiller": "distill"}

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            here = (stage_of[type(self.model).__name__], self.epoch, batch)
            if ":".join(map(str, here)) == kill:
                os.kill(os.getpid(), signal.SIGKILL)

    simclrv2.fit(
        output_dir=output_dir, callbacks=[Kill()], epochs=2,
        steps_per_epoch=2, batch_size=16, labeled_batch_size=8,
        memory_size=40, finetune_batch_size=20, finetune_epochs=2,
        distill_epochs=2, interpolation_folds=0, baselines=False,
        export=False, verbose=0,
    )
    """
)


def _run(output_dir, kill="none"):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(output_dir), kill],
        capture_output=True,
        text=True,
        env=env,
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


def test_kill_9_in_every_stage_resumes_to_the_same_weights(tmp_path):
    straight = _run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    # Mid-epoch after a backup, in the first epoch (no backup yet), and
    # mid-epoch again: each kill leaves the run to resume from its files.
    for kill in ("pretrain:1:0", "finetune:0:1", "distill:1:1"):
        killed = _run(tmp_path / "killed", kill)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = _run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from the backup of epoch 1" in resumed.stdout
    for stage in ("pretrain", "finetune", "distill"):
        a = _arrays(tmp_path / "straight" / stage / "final.weights.h5")
        b = _arrays(tmp_path / "killed" / stage / "final.weights.h5")
        assert a.keys() == b.keys() and a
        for name in a:
            np.testing.assert_allclose(
                a[name], b[name], rtol=1e-6, atol=1e-6, err_msg=name
            )
        history = tmp_path / "killed" / stage / "history.json"
        assert (
            history.read_text()
            == (tmp_path / "straight" / stage / "history.json").read_text()
        )
