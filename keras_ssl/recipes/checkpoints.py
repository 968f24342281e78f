"""A run's directory: its lock, and each stage's result, fingerprint, atomic
files, backups and resume.

Every file a stage writes goes to a temporary name first, is flushed to
disk and renamed into place, so an interrupted write leaves the previous
file whole. One run at a time holds `output_dir` (`RunLock`).
"""

import errno
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from dataclasses import field

import keras
import numpy as np

FINAL = "final.weights.h5"
HISTORY = "history.json"
FINGERPRINT = "fingerprint.json"
BACKUP_WEIGHTS = "backup.weights.h5"


class StaleStageError(ValueError):
    """A stage directory holds a stage made with other settings or data."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or weight."""


class RunLockedError(ValueError):
    """Another live run holds the output directory."""


TEMPORARY = ".tmp"


@dataclass
class StageResult:
    """What one stage of a recipe produced.

    Attributes:
        name: str. The stage (`"pretrain"`, `"finetune"`, ...).
        history: dict of per-epoch training metrics, all epochs.
        metrics: dict of evaluation results after the stage.
        weights_path: str. The stage's final weights.
        log_dir: str. TensorBoard logs.
        reused: bool. Whether a finished stage was loaded, not trained.
        resumed_from: int. Epochs already done when training started.
    """

    name: str
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_path: str = ""
    log_dir: str = ""
    reused: bool = False
    resumed_from: int = 0


def atomic_write(path, write):
    """Calls `write(temporary_path)`, flushes the file to disk, then renames
    it to `path`.

    A write that fails raises an `OSError` naming `path` (with the
    original error's errno) and leaves the previous file whole; an HDF5
    file the failed write left open is closed first, so that nothing is
    flushed to the full disk when the interpreter exits (h5py crashed the
    process there with a segmentation fault).
    """
    folder, base = os.path.split(path)
    # The temporary name keeps `base` as its ending: Keras checks it.
    temporary = os.path.join(folder, f"{TEMPORARY}{os.getpid()}-{base}")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(folder or ".")
    except OSError as error:
        raise _write_error(path, error) from error
    finally:
        if os.path.exists(temporary):
            _close_hdf5(temporary)
            _remove(temporary)


def _write_error(path, error):
    """An `OSError` that names `path`, with `error`'s errno."""
    code = error.errno
    what = os.strerror(code) if code else str(error)
    return OSError(
        code,
        f"{path} could not be written ({what}); the previous file, if "
        "any, is unchanged",
    )


def _fsync(path):
    """Flushes the file or folder at `path` to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _close_hdf5(path):
    """Closes every HDF5 file this process holds open at `path`.

    Keras's `save_weights` leaves its file open when a write fails; h5py
    would close it when the interpreter exits, flushing to the full disk
    again, and that failure in its finaliser crashed the process (exit
    status 139) after the error was reported. Closing it now may fail the
    same way: that error is dropped (the file is removed).
    """
    # h5py (Keras's weights files): only when a file is checked.
    import h5py

    target = os.path.realpath(path)
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            name = os.fsdecode(file_id.name)
            if os.path.realpath(name) == target:
                h5py.File(file_id).close()
        except Exception:  # noqa: BLE001 (the disk may still be full)
            pass


def _check_space(model, path):
    """Raises the `OSError` of a full disk (or of the process's file size
    limit) when `model`'s weights and optimizer state cannot fit at `path`.

    HDF5 (1.14.6, h5py 3.14) crashes the process with a segmentation
    fault when it cannot flush a file as it closes it, so a write is not
    started where it cannot end; a disk filled by another process during
    the write can still fail it (see `_close_hdf5`).
    """
    # POSIX only: the file-size limit, where the platform has one.
    import resource

    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    size = 1 << 20
    for variable in variables:
        bits = re.search(r"\d+", str(variable.dtype))  # float8_e4m3fn: 8
        bits = int(bits.group()) if bits else 64
        size += 4096 + int(np.prod(variable.shape)) * max(1, bits // 8)
    stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if size > stats.f_bavail * stats.f_frsize:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size > limit:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))


def _write_weights(model, path):
    """`model.save_weights(path)` where there is room for it, flushed to
    disk; an HDF5 file left open by a failed write is closed."""
    _check_space(model, path)
    try:
        model.save_weights(path)
    except BaseException:
        _close_hdf5(path)
        raise
    _fsync(path)


def write_json(path, value):
    """Writes `value` as JSON to `path`, atomically."""

    def write(temporary):
        with open(temporary, "w") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_json(path):
    """The JSON in `path`, or `None` if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_weights(model, path):
    """`model.save_weights(path)`, atomically (see `atomic_write`), once
    there is room for it."""
    atomic_write(path, lambda temporary: _write_weights(model, temporary))


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def check_finite(model, where):
    """Raises `NonFiniteError` if any of `model`'s weights is NaN or inf."""
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NonFiniteError(
                f"{where}: the weight {variable.path} is not finite."
            )


def prepare(stage_dir, fingerprint, overwrite, advice=None, on_delete=None):
    """Checks `stage_dir` against `fingerprint` before a stage runs.

    Returns `"new"` (nothing saved: the fingerprint is written now),
    `"resume"` (same settings, unfinished) or `"finished"`. A directory
    made with other settings or data raises `StaleStageError` naming the
    differences and `advice` (by default: a new `output_dir` or
    `overwrite`), unless `overwrite`, which empties it after calling
    `on_delete(stage_dir, reason)` (which says what goes, and why).

    A finished stage whose final weights or history cannot be read in
    full has them set aside (`set_aside`) and resumes. It runs under the
    run's lock (`RunLock`), so temporary files in `stage_dir` are what a
    killed run left half-written: they are removed, and a folder that
    held nothing else (a run killed while it wrote the first fingerprint)
    is an unfinished new stage.
    """
    fingerprint = json.loads(json.dumps(fingerprint))
    saved_path = os.path.join(stage_dir, FINGERPRINT)
    _remove_temporaries(stage_dir)
    if os.path.isdir(stage_dir) and os.listdir(stage_dir):
        saved = read_json(saved_path)
        if saved == fingerprint and is_finished(stage_dir):
            set_aside(stage_dir, damage(stage_dir))
        if saved == fingerprint:
            return "finished" if is_finished(stage_dir) else "resume"
        damaged = saved is None and os.path.exists(saved_path)
        if not overwrite:
            raise StaleStageError(
                _stale_message(stage_dir, saved, fingerprint, advice, damaged)
            )
        if on_delete is not None:
            on_delete(stage_dir, _differences(saved, fingerprint, damaged))
        shutil.rmtree(stage_dir)
    os.makedirs(stage_dir, exist_ok=True)
    write_json(saved_path, fingerprint)
    return "new"


def _remove_temporaries(stage_dir):
    """Removes the temporary files and folders of interrupted writes in
    `stage_dir` and its backups."""
    for folder in (stage_dir, os.path.join(stage_dir, "backup")):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.startswith(TEMPORARY):
                _remove(os.path.join(folder, name))


def is_finished(stage_dir):
    """Whether `stage_dir` holds a finished stage: its final weights and
    its history (see `damage` for whether they can be read)."""
    return all(
        os.path.exists(os.path.join(stage_dir, name))
        for name in (FINAL, HISTORY)
    )


def damage(stage_dir):
    """What is wrong with a finished stage's files, as `(file, problem)`
    pairs: the final weights must read in full and the history must be a
    JSON object. Empty when both are whole."""
    found = []
    weights = os.path.join(stage_dir, FINAL)
    problem = _unreadable(weights)
    if problem is not None:
        found.append((weights, problem))
    history = os.path.join(stage_dir, HISTORY)
    if not isinstance(read_json(history), dict):
        found.append((history, "it is not a whole JSON object"))
    return found


def set_aside(stage_dir, found):
    """Renames each damaged file of `found` (`damage`'s pairs) to
    `damaged_<name>` beside it, with a `RuntimeWarning` naming it; the
    stage is then unfinished and resumes from its newest readable backup,
    if any, else from its start."""
    for path, problem in found:
        folder, name = os.path.split(path)
        aside = os.path.join(folder, f"damaged_{name}")
        _remove(aside)
        os.replace(path, aside)
        warnings.warn(
            f"{path} cannot be read ({problem}); it is set aside as {aside} "
            "and the stage is trained again from its newest readable "
            "backup, if any, else from its start.",
            RuntimeWarning,
            stacklevel=4,
        )


def stale_fields(stage_dir, fields):
    """The fields of `stage_dir`'s saved fingerprint whose values differ
    from `fields` (a dict of name to value, JSON-ready), as
    `name: old then, new now` phrases; names that `fields` lacks are not
    compared. Empty when nothing is saved."""
    saved = read_json(os.path.join(stage_dir, FINGERPRINT))
    if not isinstance(saved, dict):
        return []
    now = json.loads(json.dumps(fields))
    old = saved.get("fields", {})
    return [
        f"{key}: {old[key]!r} then, {now[key]!r} now"
        for key in sorted(set(old) & set(now))
        if old[key] != now[key]
    ]


def stale_message(stage_dir, differences, advice=None):
    """The message of a `StaleStageError` for `stage_dir`, from its
    differences and the way out (`advice`)."""
    advice = advice or (
        "Use a new `output_dir`, or pass `overwrite=True` "
        "(`--overwrite true`) to retrain it there."
    )
    return (
        f"{stage_dir} holds a stage made with other settings or data "
        f"({'; '.join(differences)}). {advice}"
    )


def _stale_message(stage_dir, saved, now, advice=None, damaged=False):
    return stale_message(stage_dir, _differences(saved, now, damaged), advice)


def _differences(saved, now, damaged=False):
    if damaged:
        differences = [f"its {FINGERPRINT} cannot be read"]
    elif saved is None:
        differences = ["no record of the settings it was made with"]
    else:
        differences = []
        for part in ("fields", "data"):
            old, new = saved.get(part, {}), now.get(part, {})
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    label = key if part == "fields" else f"data {key}"
                    differences.append(
                        f"{label}: {old.get(key)!r} then, {new.get(key)!r} now"
                    )
        if saved.get("start") != now.get("start"):
            differences.append(
                f"the stage it starts from ({now.get('start_stage')}) changed"
            )
    return differences


class Backups:
    """Numbered backups of a training stage, `epoch_N/` with the weights
    (optimizer included) and the history of epochs 1..N.

    Each backup is written to a temporary folder and renamed into place,
    and the newest two are kept: when the newest cannot be read, it is set
    aside with a warning and the run resumes from the one before.
    """

    KEEP = 2

    def __init__(self, directory):
        self.directory = directory

    def _epochs(self):
        if not os.path.isdir(self.directory):
            return []
        names = os.listdir(self.directory)
        epochs = [n[len("epoch_") :] for n in names if n.startswith("epoch_")]
        return sorted((int(e) for e in epochs if e.isdigit()), reverse=True)

    def _path(self, epoch):
        return os.path.join(self.directory, f"epoch_{epoch}")

    def restore(self, model):
        """Loads the newest readable backup into `model`.

        Returns:
            `(epoch, history)`: epochs done and their history; `(0, {})`
            when there is no backup.
        """
        for epoch in self._epochs():
            path = self._path(epoch)
            weights = os.path.join(path, BACKUP_WEIGHTS)
            history = read_json(os.path.join(path, HISTORY))
            problem = _unreadable(weights) if history is not None else None
            if history is None:
                problem = "its history is missing or damaged"
            if problem is None:
                model.load_weights(weights)
                return epoch, history
            aside = os.path.join(self.directory, f"damaged_epoch_{epoch}")
            _remove(aside)
            os.replace(path, aside)
            warnings.warn(
                f"The backup {path} cannot be read ({problem}); it is set "
                f"aside as {aside} and the stage resumes from the backup "
                "before it, if any.",
                RuntimeWarning,
                stacklevel=2,
            )
        return 0, {}

    def save(self, model, epoch, history):
        """Writes backup `epoch` atomically and drops older ones."""
        os.makedirs(self.directory, exist_ok=True)
        final = self._path(epoch)
        temporary = os.path.join(self.directory, f".tmp{os.getpid()}_{epoch}")
        _remove(temporary)
        os.makedirs(temporary)
        try:
            _write_weights(model, os.path.join(temporary, BACKUP_WEIGHTS))
            write_json(os.path.join(temporary, HISTORY), history)
            _fsync(temporary)
            _remove(final)
            os.replace(temporary, final)
            _fsync(self.directory)
        except OSError as error:
            raise _write_error(final, error) from error
        finally:
            _remove(temporary)
        for old in self._epochs()[self.KEEP :]:
            _remove(self._path(old))

    def remove(self):
        _remove(self.directory)


def _unreadable(path):
    """Why the HDF5 file at `path` cannot be read in full, or `None`."""
    # h5py (Keras's weights files): only when a file is checked.
    import h5py

    try:
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda _, item: item[()] if hasattr(item, "shape") else None
            )
    except Exception as error:  # h5py raises OSError, KeyError, ...
        return f"{type(error).__name__}: {error}"
    return None


class StageGuard(keras.callbacks.Callback):
    """Stops a stage at its first non-finite loss or weight, else backs it
    up after every epoch (the weights are checked before they are saved).
    """

    def __init__(self, stage, backups, history):
        super().__init__()
        self.stage = stage
        self.backups = backups
        self.history = history
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._stop(f"step {batch + 1}: loss={float(loss)}")

    def on_epoch_end(self, epoch, logs=None):
        try:
            check_finite(self.model, "the weights")
        except NonFiniteError as error:
            self._stop(f"the end of the epoch: {error}")
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.backups.save(self.model, epoch + 1, self.history)

    def _stop(self, what):
        kept = self.backups._epochs()
        kept = (
            f"the backup of epoch {kept[0]} in {self.backups.directory} is kept"
            if kept
            else "no epoch finished, so no checkpoint is kept"
        )
        raise NonFiniteError(
            f"Stage '{self.stage}' went non-finite in epoch {self.epoch + 1} "
            f"at {what}. Stopped: {kept}, and nothing is exported. Try a "
            "lower learning rate, a longer warm-up (`warmup_fraction`), "
            "or check that the images are uint8 in [0, 255] or floats in "
            "[0, 1]."
        )


def log_dir(stage_dir):
    """The stage's TensorBoard folder (Keras's callback writes its
    `train` run there)."""
    return os.path.join(stage_dir, "logs")


def fit_stage(
    name,
    model,
    data,
    *,
    epochs,
    steps,
    stage_dir,
    verbose,
    callbacks,
    monitors=(),
):
    """Trains one stage so that an interrupted run resumes where it was.

    `stage_dir` must have been checked by `prepare`. A finished stage is
    loaded instead of retrained; otherwise training starts from the newest
    readable backup, on the batches the uninterrupted run would see.
    `monitors` are callbacks that add to the epoch's logs: they run first,
    so that the history, the TensorBoard log and the backups record what
    they add; `callbacks` run last.

    Returns:
        A `StageResult`.
    """
    result = StageResult(
        name=name,
        weights_path=os.path.join(stage_dir, FINAL),
        log_dir=log_dir(stage_dir),
    )
    # Built here, the optimizer's variables exist before the first trace;
    # built inside it, TensorFlow traces the training step twice.
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    record = os.path.join(stage_dir, HISTORY)
    if is_finished(stage_dir):
        model.load_weights(result.weights_path)
        result.history = read_json(record)
        result.reused = True
        return result
    backups = Backups(os.path.join(stage_dir, "backup"))
    initial, history = backups.restore(model)
    result.resumed_from = initial
    model.fit(
        resume_stream(data, initial * steps),
        epochs=epochs,
        initial_epoch=initial,
        steps_per_epoch=steps,
        callbacks=[
            *monitors,
            StageGuard(name, backups, history),
            keras.callbacks.TensorBoard(result.log_dir, write_graph=False),
            *callbacks,
        ],
        verbose=verbose,
        # The recipes' streams shuffle themselves, deterministically.
        shuffle=False,
    )
    check_finite(model, f"Stage '{name}'")
    result.history = history
    save_weights(model, result.weights_path)
    write_json(record, history)
    backups.remove()
    return result


def resume_stream(data, offset):
    """The stream as `fit()` should see it, `offset` batches in.

    The recipes' streams are infinite and batch `i` depends on `i` alone,
    so a resumed run sees exactly the batches the uninterrupted run would.
    On TensorFlow the stream becomes a `tf.data.Dataset`, which also gives
    its batches a static shape.
    """
    if getattr(data, "num_batches", 0) is not None:
        return data
    if keras.backend.backend() == "tensorflow":
        if "start_step" in inspect.signature(data.to_tf_dataset).parameters:
            return _streamed(data, offset)
        dataset = data.to_tf_dataset()
        return dataset.skip(offset) if offset else dataset
    return _Offset(data, offset) if offset else data


def _streamed(data, offset):
    """Streamed images from batch `offset` on, reading none before it;
    under several workers or a TPU each input pipeline reads only its
    replicas' share of every global batch."""
    # TensorFlow: only for a stream that is distributed.
    import tensorflow as tf

    from keras_ssl.distribute import in_multi_worker_mode

    strategy = tf.distribute.get_strategy()
    tpu = "TPU" in type(strategy).__name__
    if not (in_multi_worker_mode() or tpu):
        return data.to_tf_dataset(start_step=offset)
    return strategy.distribute_datasets_from_function(
        lambda context: data.to_tf_dataset(context, start_step=offset)
    )


class _Offset(keras.utils.PyDataset):
    """An infinite stream started `offset` batches in."""

    def __init__(self, stream, offset):
        super().__init__()
        self.stream = stream
        self.offset = offset

    @property
    def num_batches(self):
        return None

    def __getitem__(self, index):
        return self.stream[index + self.offset]


LOCK = "run.lock"


class RunLock:
    """One run at a time in `output_dir`.

    `acquire` takes an exclusive `fcntl.flock` on `output_dir/run.lock`
    and writes its holder there (pid, host, start time, command); the OS
    releases the lock when the process ends, however it ends. A second
    run raises `RunLockedError` (a `ValueError`) naming the holder before
    it reads data or touches a stage, so neither trains nor deletes
    (`overwrite`) what the other holds. A record left by a process that
    died on this host is taken over, with a line saying so. A record left
    by a process on another host is taken over only when the lock is
    free: the lock file must be on a file system whose `flock` reaches
    every host (local disks, NFS, Lustre).

    Args:
        output_dir: str. The run's folder (made if missing).
        name: str. The lock file's name; the workers of one multi-worker
            run each take their own (`lock_name`).
    """

    def __init__(self, output_dir, name=LOCK):
        self.path = os.path.join(output_dir, name)
        self.descriptor = None

    def acquire(self):
        # POSIX only: the lock is advisory where the platform has flock.
        import fcntl

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"{os.path.dirname(self.path)} is in use by another run "
                f"({describe_holder(holder)}). Wait for it to end or stop "
                "it, or give this run another `output_dir`. Received: "
                f"output_dir={os.path.dirname(self.path)!r}"
            ) from None
        try:
            previous = _read_holder(descriptor)
            if previous:
                print(
                    f"{self.path}: taking over the lock of a run that ended "
                    f"without releasing it ({describe_holder(previous)})."
                )
            record = json.dumps(holder_record()).encode()
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, record, 0)
            os.fsync(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        self.descriptor = descriptor
        return self

    def release(self):
        """Clears the holder's record and releases the lock (the lock file
        stays: removing it would let two runs lock two different files)."""
        if self.descriptor is None:
            return
        # POSIX only: the lock is advisory where the platform has flock.
        import fcntl

        descriptor, self.descriptor = self.descriptor, None
        try:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def lock_name():
    """`run.lock`, or under a multi-worker `TF_CONFIG` one lock per task
    (`run-worker-1.lock`): the workers of one run share `output_dir`."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except (ValueError, AttributeError):
        task = {}
    if not task:
        return LOCK
    return f"run-{task.get('type', 'worker')}-{task.get('index', 0)}.lock"


def holder_record():
    """This process as a lock's holder: pid, host, start time, command."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def _read_holder(descriptor):
    try:
        text = os.pread(descriptor, 1 << 16, 0)
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return {}


def describe_holder(holder):
    """A lock holder's record in words."""
    if not holder:
        return "its holder's record is not written yet or cannot be read"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started "
        f"{holder.get('started')}: {holder.get('command')}"
    )
