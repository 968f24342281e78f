"""A stage's directory: fingerprint, atomic files, backups and resume.

Every file a stage writes goes to a temporary name first and is renamed
into place, so an interrupted write leaves the previous file whole.
"""

import inspect
import json
import os
import shutil
import warnings

import keras
import numpy as np

from keras_ssl.recipes.reports import StageResult

FINAL = "final.weights.h5"
HISTORY = "history.json"
FINGERPRINT = "fingerprint.json"
BACKUP_WEIGHTS = "backup.weights.h5"


class StaleStageError(ValueError):
    """A stage directory holds a stage made with other settings or data."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or weight."""


def atomic_write(path, write):
    """Calls `write(temporary_path)`, then renames the file to `path`."""
    folder, base = os.path.split(path)
    # The temporary name keeps `base` as its ending: Keras checks it.
    temporary = os.path.join(folder, f".tmp{os.getpid()}-{base}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            _remove(temporary)


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
    """`model.save_weights(path)`, atomically."""
    atomic_write(path, model.save_weights)


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


def prepare(stage_dir, fingerprint, overwrite, advice=None):
    """Checks `stage_dir` against `fingerprint` before a stage runs.

    Returns `"new"` (nothing saved: the fingerprint is written now),
    `"resume"` (same settings, unfinished) or `"finished"`. A directory
    made with other settings or data raises `StaleStageError` naming the
    differences and `advice` (by default: a new `output_dir` or
    `overwrite`), unless `overwrite`, which empties it.
    """
    fingerprint = json.loads(json.dumps(fingerprint))
    saved_path = os.path.join(stage_dir, FINGERPRINT)
    if os.path.isdir(stage_dir) and os.listdir(stage_dir):
        saved = read_json(saved_path)
        if saved == fingerprint:
            return "finished" if is_finished(stage_dir) else "resume"
        if not overwrite:
            raise StaleStageError(
                _stale_message(stage_dir, saved, fingerprint, advice)
            )
        shutil.rmtree(stage_dir)
    os.makedirs(stage_dir, exist_ok=True)
    write_json(saved_path, fingerprint)
    return "new"


def is_finished(stage_dir):
    """Whether `stage_dir` holds a finished stage: its final weights and
    its history."""
    return all(
        os.path.exists(os.path.join(stage_dir, name))
        for name in (FINAL, HISTORY)
    )


def _stale_message(stage_dir, saved, now, advice=None):
    if saved is None:
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
    advice = advice or (
        "Use a new `output_dir`, or pass `overwrite=True` "
        "(`--overwrite true`) to retrain it there."
    )
    return (
        f"{stage_dir} holds a stage made with other settings or data "
        f"({'; '.join(differences)}). {advice}"
    )


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
            model.save_weights(os.path.join(temporary, BACKUP_WEIGHTS))
            write_json(os.path.join(temporary, HISTORY), history)
            _remove(final)
            os.replace(temporary, final)
        finally:
            _remove(temporary)
        for old in self._epochs()[self.KEEP :]:
            _remove(self._path(old))

    def remove(self):
        _remove(self.directory)


def _unreadable(path):
    """Why the HDF5 file at `path` cannot be read in full, or `None`."""
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


def fit_stage(
    name, model, data, *, epochs, steps, stage_dir, verbose, callbacks
):
    """Trains one stage so that an interrupted run resumes where it was.

    `stage_dir` must have been checked by `prepare`. A finished stage is
    loaded instead of retrained; otherwise training starts from the newest
    readable backup, on the batches the uninterrupted run would see.

    Returns:
        A `StageResult`.
    """
    result = StageResult(
        name=name,
        weights_path=os.path.join(stage_dir, FINAL),
        log_dir=os.path.join(stage_dir, "logs"),
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
