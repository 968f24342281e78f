"""The runner: a recipe declares its stages, `run` runs them.

A `Stage` says what model it builds, what it trains on, for how long and
what it reports; `run` owns the rest: the strategy (`strategy.py`), the
data (`load_data`), the run directory (fingerprints, resume and reuse:
`checkpoints.py`; which stages run or load: `stage_plan.py`), non-finite
stops and the export. Keras is imported when a stage runs, not with this
module, so that a recipe's command line answers before TensorFlow loads.
"""

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Callable

from keras_ssl.recipes import precision
from keras_ssl.recipes import stage_plan
from keras_ssl.recipes.config import RUN_FIELDS
from keras_ssl.recipes.config import STREAMED
from keras_ssl.recipes.strategy import make_strategy
from keras_ssl.recipes.strategy import resolve_strategy


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe, as data.

    Attributes:
        name: str. The stage's name and folder in `output_dir`.
        build: `(run) -> keras.Model`. Builds the stage's model, from the
            models of earlier stages in `run.models` where it starts there.
        data: `(run) -> stream`. The infinite stream it trains on.
        optimizer: `(run, total_steps) -> keras.optimizers.Optimizer`.
        epochs: str. The config field with its number of epochs.
        batch: `(run) -> int`. Examples per step, for one pass per epoch.
        examples: `(run) -> int`. Examples in one pass.
        steps: str or `None`. The config field with its total step
            budget, which replaces `epochs` when it is not `None`.
        start: str or `None`. The stage whose trained models it uses.
        init: `(run, model) -> None` or `None`. Prepares the compiled
            model before training (e.g. LP-FT's linear head).
        finish: `(run, model) -> None` or `None`. Changes the trained (or
            restored) model before its report and export (e.g. WiSE-FT's
            weight averaging).
        report: tuple of `(run, model) -> dict` metrics after training.
        role: str. The model's key in `RecipeResult.models`.
        title: str. What the report calls its `test_accuracy`.
        exports: str. The name its model is exported under
            (`output_dir/export/<name>`); `""` for none.
        when: `(config) -> bool` or `None`. Whether it is chosen to run
            (and runs if its budget is > 0); `None`: when `config.stages`
            names it.
        labels: `(config) -> bool` or `None`. Whether its training reads
            labels (`None`: always). A stage that reads none is
            fingerprinted without them, so one pretraining serves every
            labeled subset of the same images.
        monitors: `(run, model) -> list` of Keras callbacks or `None`.
            Callbacks that add to each epoch's logs (e.g. the k-NN
            monitor): they run before the epoch is recorded in the
            stage's history, its TensorBoard log and its backup.
    """

    name: str
    build: Callable
    data: Callable
    optimizer: Callable
    epochs: str
    batch: Callable
    examples: Callable
    steps: str | None = None
    start: str | None = None
    init: Callable | None = None
    finish: Callable | None = None
    report: tuple = ()
    role: str = ""
    title: str = ""
    exports: str = ""
    when: Callable | None = None
    labels: Callable | None = None
    monitors: Callable | None = None

    def reads_labels(self, config):
        return self.labels is None or bool(self.labels(config))

    def budget(self, config):
        """The stage's total steps if it has a step budget, else its
        epochs: either way, 0 means it does not run."""
        steps = getattr(config, self.steps) if self.steps else None
        return getattr(config, self.epochs) if steps is None else steps

    def runs(self, config):
        if self.when is None:
            chosen = self.name in config.stages
        else:
            chosen = bool(self.when(config))
        return chosen and self.budget(config) > 0


def schedule(total_steps, steps_per_epoch):
    """`(epochs, steps per epoch)` that make exactly `total_steps`, with
    epochs (a backup after each) of at least `steps_per_epoch` steps: the
    most epochs that divide the budget evenly."""
    most = max(1, total_steps // max(1, steps_per_epoch))
    epochs = max(e for e in range(1, most + 1) if total_steps % e == 0)
    return epochs, total_steps // epochs


@dataclass
class Run:
    """What the stages of one `fit()` share.

    Attributes:
        config: the config, read through a recorder that notes the fields
            each stage reads for its fingerprint.
        splits: the run's data, `datasets.ArraySplits` or
            `streams.RecipeStreams`: the methods they share give every
            stage its streams, sizes and evaluations.
        labeled: `keras_ssl.data.LabeledSubset` of the training images
            in memory (LP-FT's probe and WiSE-FT's folds read them), or
            `None` where they are streamed.
        sync: bool. Synchronized BatchNorm (more than one replica).
        models: dict of role to model, filled stage by stage.
        result: the `RecipeResult` being built.
        callbacks: extra Keras callbacks for every stage.
        stage: str. The stage being built or run.
        start_weights: dict of stage name to the weights its model
            started training from, where a `finish` needs them.
        current: the `Stage` being run, and `total_steps` its budget.
    """

    config: object
    splits: object
    labeled: object
    sync: bool
    result: object
    callbacks: tuple = ()
    models: dict = field(default_factory=dict)
    stage: str = ""
    start_weights: dict = field(default_factory=dict)
    current: object = None
    total_steps: int = 0


class _Reads:
    """Reads a config's fields and notes which ones were read."""

    def __init__(self, config):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "names", set())

    def __getattr__(self, name):
        value = getattr(self._config, name)
        if not callable(value) and name not in RUN_FIELDS:
            self.names.add(name)
        return value


def run(
    config,
    stages,
    *,
    strategy=None,
    callbacks=(),
    result_cls=None,
    data=None,
):
    """Runs `stages` for `config` and returns a `RecipeResult`.

    Each stage that runs is checked against its folder in `output_dir`
    (see `checkpoints.prepare`), trained or reused, and reported on; the
    report (every model and the baselines on the same test images) is
    printed and saved, and with `config.export` every trained model is
    exported under its own name. The run uses `config.precision`'s Keras
    dtype policy (`"auto"`: the hardware's, see `recipes/precision.py`),
    says which at its start and restores the previous one afterwards.

    Args:
        config: the recipe's config.
        stages: tuple of `Stage`.
        strategy: optional `tf.distribute.Strategy`.
        callbacks: extra Keras callbacks for every stage.
        result_cls: optional `RecipeResult` subclass.
        data: optional `datasets.ArraySplits` of the user's images; the
            config's data set otherwise (see `load_data`).
    """
    # Keras: loaded when the run starts, not with the command line.
    import keras

    from keras_ssl.recipes import reports

    result = (result_cls or reports.RecipeResult)(config=config)
    if strategy is None:
        strategy = make_strategy(config.strategy)
    strategy = resolve_strategy(strategy, config.global_batch_sizes())
    choice = precision.detect(config.precision)
    print(choice.message())
    result.precision = choice.as_dict()
    splits, labeled = load_data(config, data)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(choice.policy)
    try:
        # The stages and their fingerprints see the precision used: `auto`
        # that comes to float32 matches a run set to float32.
        used = dataclasses.replace(config, precision=choice.precision)
        state = _run_stages(
            used, stages, strategy, splits, labeled, result, callbacks
        )
    finally:
        keras.config.set_dtype_policy(previous)
    if config.baselines:
        result.baselines = splits.pixel_baselines()
    if config.export:
        _export(stages, state, result)
    result.seconds = time.time() - result.started
    reports.save_report(result, stages)
    return result


def _run_stages(config, stages, strategy, splits, labeled, result, callbacks):
    reads = _Reads(config)
    sync = strategy.num_replicas_in_sync > 1
    state = Run(reads, splits, labeled, sync, result, tuple(callbacks))
    identity = data_identity(config, splits)
    unlabeled = data_identity(config, splits, labels=False)
    result.data = identity
    prints = {}
    needed, loaded = stage_plan.needed_stages(stages, config)
    stage_plan.check_loadable(loaded, config, stages)
    with strategy.scope():
        for stage in needed:
            reads.names.clear()
            state.stage = stage.name
            model = stage.build(state)
            state.models[stage.role or stage.name] = model
            if not stage.runs(config) and stage.name not in loaded:
                built = {n: getattr(config, n) for n in sorted(reads.names)}
                prints[stage.name] = {"built": built}
                continue
            per_epoch = reads.steps_per_epoch or max(
                1, stage.examples(state) // stage.batch(state)
            )
            budget = getattr(reads, stage.steps) if stage.steps else None
            if budget is None:
                epochs, steps = getattr(reads, stage.epochs), per_epoch
            else:
                epochs, steps = schedule(budget, per_epoch)
            data = stage.data(state)
            state.current, state.total_steps = stage, steps * epochs
            model.compile(optimizer=stage.optimizer(state, steps * epochs))
            if stage.init is not None:
                stage.init(state, model)
            seen = identity if stage.reads_labels(config) else unlabeled
            prints[stage.name] = _fingerprint(stage, reads, seen, prints)
            _train(
                stage,
                state,
                model,
                (data, epochs, steps),
                prints[stage.name],
                reuse_only=stage.name in loaded,
            )
            if stage.finish is not None:
                stage.finish(state, model)
            for report in stage.report:
                result.stages[stage.name].metrics.update(report(state, model))
    result.models.update(state.models)
    return state


def _fingerprint(stage, reads, identity, prints):
    """The config fields the stage read, the data's identity and a digest
    of the fingerprint of the stage it starts from."""
    config = reads._config
    names = reads.names | {"seed", "dataset", "image_size", "precision"}
    start = prints.get(stage.start) if stage.start else None
    return {
        "fields": {n: getattr(config, n) for n in sorted(names)},
        "data": identity,
        "start": hashlib.sha256(repr(start).encode()).hexdigest()[:16],
        "start_stage": stage.start,
    }


def _train(stage, state, model, schedule, fingerprint, reuse_only=False):
    """Trains the stage, resumes it or reuses its finished run; with
    `reuse_only` (a stage that was not chosen), only the last, and never
    over a stage made with other settings, `overwrite` or not."""
    from keras_ssl.recipes import checkpoints  # Keras: loaded when run.

    config = state.config
    data, epochs, steps = schedule
    stage_dir = os.path.join(config.output_dir, stage.name)
    status = checkpoints.prepare(
        stage_dir,
        fingerprint,
        config.overwrite and not reuse_only,
        stage_plan.stale_advice(stage, config, reuse_only),
        on_delete=stage_plan.deleting(config),
    )
    print(start_line(stage.name, epochs, steps, stage_dir, status))
    result = checkpoints.fit_stage(
        stage.name,
        model,
        data,
        epochs=epochs,
        steps=steps,
        stage_dir=stage_dir,
        verbose=config.verbose,
        callbacks=state.callbacks,
        monitors=stage.monitors(state, model) if stage.monitors else (),
    )
    if result.resumed_from:
        print(
            f"Stage '{stage.name}': resumed from the backup of epoch "
            f"{result.resumed_from} in {stage_dir}."
        )
    state.result.stages[stage.name] = result


def start_line(name, epochs, steps, stage_dir, status=None):
    """The one line a stage starts with: its name, its step budget and its
    folder (and, for a finished stage, that it is reused)."""
    line = (
        f"Stage '{name}': {_count(epochs * steps, 'step')} "
        f"({_count(epochs, 'epoch')} × {_count(steps, 'step')}), "
        f"in {stage_dir}"
    )
    if status == "finished":
        return f"{line}: reusing the finished stage (same settings and data)."
    return f"{line}."


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _export(stages, state, result):
    """Exports the model of every stage that ran and exports, under its
    name; `result.export_path` is the last one (the pipeline's end)."""
    # Keras: loaded when the run starts.
    from keras_ssl.recipes import checkpoints
    from keras_ssl.recipes import reports

    for stage in stages:
        if not stage.exports or stage.name not in result.stages:
            continue
        model = state.models[stage.role or stage.name]
        checkpoints.check_finite(model, f"The {stage.exports} model to export")
        reports.export(result, model, stage.exports)


def data_identity(config, splits, labels=True):
    """The data set's name, sizes and a hash of (a sample of) its
    contents and of every label, for the stages' fingerprints; with
    `labels=False`, of the training images alone (for stages that read
    no labels)."""
    return {"dataset": config.dataset, **splits.identity(labels)}


def load_data(config, data=None):
    """Seeds Keras, loads the config's data set and its labeled subset.

    This is where a recipe's data enters: the user's images when `data`
    is given (`datasets.from_user`, labeled where its `labeled_indices`
    say), else the data set `config.dataset` names with the labeled subset
    the config asks for.

    Args:
        config: the recipe's config.
        data: optional `datasets.ArraySplits` with `labeled_indices`.

    Returns:
        `(splits, labeled)`: a `datasets.ArraySplits` and the
        `keras_ssl.data.LabeledSubset` of its training images; for a
        streamed data set (`"imagenet2012"`, `"folder"`) a
        `streams.RecipeStreams`, which lists the images without reading
        them, and `None`.
    """
    # Keras: loaded when the run starts, not with the command line.
    import keras

    from keras_ssl import data as ssl_data
    from keras_ssl.recipes import datasets

    keras.utils.set_random_seed(config.seed)
    if data is None and config.dataset in STREAMED:
        from keras_ssl.recipes.streams import RecipeStreams  # Keras.

        return RecipeStreams(config), None
    if data is not None:
        indices = data.labeled_indices
        labeled = ssl_data.LabeledSubset(
            indices=indices, y=data.labeled_y, x=data.x_train[indices]
        )
        return dataclasses.replace(
            data, labeled=labeled, seed=config.seed
        ), labeled
    if config.dataset == "arrays":
        raise ValueError(
            "`dataset='arrays'` needs the images: pass `x=`, `y=`, "
            "`x_test=` and `y_test=` to `fit()`. Received: no arrays"
        )
    splits = datasets.load(
        config.dataset, config.image_size, config.data_dir, config.seed
    )
    labeled = ssl_data.labeled_subset(
        (splits.x_train, splits.y_train),
        per_class=config.labeled_per_class,
        fraction=config.labeled_fraction,
        seed=config.seed,
        num_classes=splits.num_classes,
    )
    splits = dataclasses.replace(splits, labeled=labeled, seed=config.seed)
    return splits, labeled
