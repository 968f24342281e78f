"""The shared runner: a recipe declares its stages, `run` runs them.

A `Stage` says what model it builds, what it trains on, for how long and
what it reports; `run` owns the rest: strategy checks, the data, the run
directory (fingerprints, resume, reuse), non-finite stops and the export.
Keras is imported when a stage runs, not with this module, so that a
recipe's command line answers before TensorFlow loads.
"""

import dataclasses
import hashlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from dataclasses import field
from typing import Callable

from keras_ssl.recipes import precision
from keras_ssl.recipes.config import RUN_FIELDS
from keras_ssl.recipes.config import STREAMED


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
        selectable: bool. Whether `config.stages` chooses it; otherwise it
            runs whenever `when(config)` and its budget is > 0.
        when: `(config) -> bool` or `None`. A further condition to run.
        labels: `(config) -> bool` or `None`. Whether its training reads
            labels (`None`: always). A stage that reads none is
            fingerprinted without them, so one pretraining serves every
            labeled subset of the same images.
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
    selectable: bool = True
    when: Callable | None = None
    labels: Callable | None = None

    def reads_labels(self, config):
        return self.labels is None or bool(self.labels(config))

    def budget(self, config):
        """The stage's total steps if it has a step budget, else its
        epochs: either way, 0 means it does not run."""
        steps = getattr(config, self.steps) if self.steps else None
        return getattr(config, self.epochs) if steps is None else steps

    def runs(self, config):
        chosen = self.name in config.stages or not self.selectable
        chosen = chosen and (self.when is None or self.when(config))
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
        splits: `datasets.ArraySplits`.
        labeled: `keras_ssl.data.LabeledSubset` of the training images.
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
    needed, loaded = _needed(stages, config)
    _check_loadable(loaded, config, stages)
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


def _export(stages, state, result):
    """Exports the model of every stage that ran and exports, under its
    name; `result.export_path` is the last one (the pipeline's end)."""
    from keras_ssl.recipes import checkpoints
    from keras_ssl.recipes import reports

    for stage in stages:
        if not stage.exports or stage.name not in result.stages:
            continue
        model = state.models[stage.role or stage.name]
        checkpoints.check_finite(model, f"The {stage.exports} model to export")
        reports.export(result, model, stage.exports)


def recipe_fit(config_cls, recipe_stages, pipeline):
    """A recipe's `fit()`: `run` on the config's data set, or on the
    user's images when `x` is given (the config's `dataset` becomes
    `"arrays"`; see `datasets.from_user`).

    Args:
        config_cls: the recipe's config class; `fit()` without a config
            runs its `digits()` preset.
        recipe_stages: the recipe's `Stage`s.
        pipeline: str. The stages in words, for the docstring.
    """
    name = config_cls.__name__[: -len("Config")]
    exports = [s.exports for s in recipe_stages if s.exports]

    def fit(
        config=None,
        *,
        x=None,
        y=None,
        x_test=None,
        y_test=None,
        unlabeled=None,
        labeled_indices=None,
        strategy=None,
        callbacks=(),
        **overrides,
    ):
        from keras_ssl.recipes import datasets

        config = dataclasses.replace(config or config_cls.digits(), **overrides)
        data = dict(y=y, x_test=x_test, y_test=y_test, unlabeled=unlabeled)
        data["labeled_indices"] = labeled_indices
        user = None
        if x is not None:
            config = dataclasses.replace(config, dataset="arrays")
            user = datasets.from_user(x, image_size=config.image_size, **data)
        elif any(v is not None for v in data.values()):
            given = sorted(k for k, v in data.items() if v is not None)
            raise ValueError(
                f"{given} need the training images `x`. Received: x=None"
            )
        check_data_dir(config, user)
        from keras_ssl.recipes import checkpoints

        lock = checkpoints.RunLock(config.output_dir, checkpoints.lock_name())
        with lock:
            refuse_stale(config, recipe_stages)
            return run(
                config,
                recipe_stages,
                strategy=strategy,
                callbacks=callbacks,
                data=user,
            )

    fit.__doc__ = _FIT_DOC.format(
        name=name,
        pipeline=pipeline,
        module=config_cls.__module__,
        exports=", ".join(exports),
    )
    return fit


_FIT_DOC = """Runs {name}: {pipeline}, then the report.

On the config's data set, or on your own images:

```python
result = {module}.fit(
    {module}.{name}Config.digits(image_size=32),
    x=x_labeled, y=y_labeled, unlabeled=x_unlabeled,
    x_test=x_test, y_test=y_test,
)
```

Images of any size and channel count are converted by
`keras_ssl.data.prepare_images` to the config's `image_size`.

Args:
    config: `{name}Config`. Defaults to `{name}Config.digits()`.
    x: optional training images, or a folder of class sub-folders. All
        are labeled unless `labeled_indices` is given; with `x` the
        config's data set and labeled subset are not used.
    y: int labels of `x` (a folder's class ids by default).
    x_test: test images (or a folder); needed with `x`.
    y_test: their labels.
    unlabeled: optional images without labels, pretrained on with `x`.
    labeled_indices: optional positions in `x` whose labels are used;
        the other images of `x` count as unlabeled.
    strategy: optional `tf.distribute.Strategy`; global BatchNorm is
        used when it has more than one replica.
    callbacks: extra `keras.callbacks.Callback`s for every stage.
    **overrides: fields of `config` to replace.

Returns:
    A `RecipeResult`: its `models` by role, its `report` (also
    `output_dir/report.json` and `report.png`) comparing every model
    with the baselines on the same test images, and with `export` the
    SavedModels `output_dir/export/<name>` for {exports}.

Raises:
    ValueError: before any data is read or model built, when another run
        holds `output_dir` (`checkpoints.RunLockedError`, naming it), when
        a stage there was made with other settings (`StaleStageError`)
        or when `data_dir` does not exist.
"""


def check_data_dir(config, data=None):
    """Refuses a local `data_dir` that is not a folder (remote ones, such
    as `gs://...`, are left to the data set's reader), and warns when the
    run reads none (the digits, or the user's images)."""
    path = config.data_dir
    if path is None:
        return
    if "://" not in path and not os.path.isdir(path):
        what = "is a file" if os.path.exists(path) else "does not exist"
        raise ValueError(
            f"`data_dir` is not a folder: {path} {what}. "
            f"Received: data_dir={path!r}"
        )
    if data is not None or config.dataset in ("digits", "arrays"):
        source = "the given arrays" if data is not None else config.dataset
        warnings.warn(
            f"`data_dir` is not read: the run trains on {source}. "
            f"Received: data_dir={config.data_dir!r}, "
            f"dataset={config.dataset!r}",
            UserWarning,
            stacklevel=3,
        )


def refuse_stale(config, stages):
    """Raises before any data is read or model built when a stage of the
    run could not be trained or reused in `output_dir`: one it starts from
    that is not there (`_check_loadable`), or one made with other values
    of the config fields it recorded (a `StaleStageError`, as
    `checkpoints.prepare` raises later for the data and the rest of the
    fingerprint). With `overwrite` a chosen stage is retrained instead. A
    field set to `"auto"` is resolved when the run starts, and checked
    then."""
    from keras_ssl.recipes import checkpoints

    needed, loaded = _needed(stages, config)
    _check_loadable(loaded, config, stages)
    fields = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name not in RUN_FIELDS and value != "auto":
            fields[item.name] = value
    for stage in needed:
        reuse_only = stage.name in loaded
        if not reuse_only and (config.overwrite or not stage.runs(config)):
            continue
        stage_dir = os.path.join(config.output_dir, stage.name)
        differences = checkpoints.stale_fields(stage_dir, fields)
        if differences:
            raise checkpoints.StaleStageError(
                checkpoints.stale_message(
                    stage_dir, differences, _advice(stage, config, reuse_only)
                )
            )


def _why_idle(stage, config):
    """Why a stage does not train in this run, and what would train it,
    in words."""
    name = stage.name
    if stage.selectable and name not in config.stages:
        return (
            f"is not in `stages` (received: stages={config.stages})",
            f"add '{name}' to `stages`",
        )
    field = stage.epochs
    if stage.steps and getattr(config, stage.steps) is not None:
        field = stage.steps
    if stage.budget(config) <= 0:
        return (
            f"is in `stages` but does not train: its budget is 0 "
            f"(received: {field}={getattr(config, field)})",
            f"give '{name}' a budget (`{field}` > 0)",
        )
    return "does not run with these settings", f"run '{name}'"


def _advice(stage, config, reuse_only):
    """The way out of a stale stage; `None` for the default one."""
    if not reuse_only:
        return None
    why, remedy = _why_idle(stage, config)
    return (
        f"Stage '{stage.name}' {why}, so it is loaded, never retrained: "
        f"{remedy} to retrain it."
    )


def _deleting(config):
    """`checkpoints.prepare`'s `on_delete` for `overwrite`: says what goes
    before it goes; the run's report and exports go too (they described
    the stage deleted)."""

    def on_delete(stage_dir, differences):
        outputs = [
            os.path.join(config.output_dir, name)
            for name in ("report.json", "report.png", "export")
            if os.path.exists(os.path.join(config.output_dir, name))
        ]
        also = f", and the last run's {', '.join(outputs)}" if outputs else ""
        print(
            f"overwrite=True: deleting {stage_dir} (made with other "
            f"settings or data: {'; '.join(differences)}){also}."
        )
        for path in outputs:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    return on_delete


def _needed(stages, config):
    """The stages to build, in order, and the names of those among them
    that do not run but whose trained models a running stage starts from
    (they are loaded from `output_dir`). The first stage is always built
    (so `stages=()` gives its network)."""
    needed = {stages[0].name} if stages else set()
    starts = set()
    for stage in reversed(stages):
        if stage.runs(config) or stage.name in starts:
            needed.add(stage.name)
            if stage.start:
                needed.add(stage.start)
                starts.add(stage.start)
    loaded = {s.name for s in stages if s.name in starts and not s.runs(config)}
    return [s for s in stages if s.name in needed], loaded


def _check_loadable(loaded, config, stages=()):
    """Raises before any training when a stage that a chosen one starts
    from is neither chosen nor finished in `output_dir`, or its files
    there cannot be read. `stages` say why it does not train."""
    from keras_ssl.recipes import checkpoints

    stages = {stage.name: stage for stage in stages}
    for name in sorted(loaded):
        stage_dir = os.path.join(config.output_dir, name)
        why, remedy = "is not in `stages`", f"add '{name}' to `stages`"
        if name in stages:
            why, remedy = _why_idle(stages[name], config)
        if not checkpoints.is_finished(stage_dir):
            raise ValueError(
                f"A chosen stage starts from stage '{name}', which {why}; "
                f"nor has it finished in {stage_dir}. Received: "
                f"stages={config.stages}. To train it, {remedy}, or set "
                "`output_dir` to the run where it finished."
            )
        for path, problem in checkpoints.damage(stage_dir):
            raise ValueError(
                f"A chosen stage starts from stage '{name}', which {why}, "
                f"so it is loaded from {stage_dir}; but {path} cannot be "
                f"read ({problem}). To train it again, {remedy} (the "
                "damaged file is then set aside)."
            )


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
    from keras_ssl.recipes import checkpoints

    config = state.config
    data, epochs, steps = schedule
    stage_dir = os.path.join(config.output_dir, stage.name)
    status = checkpoints.prepare(
        stage_dir,
        fingerprint,
        config.overwrite and not reuse_only,
        _advice(stage, config, reuse_only),
        on_delete=_deleting(config),
    )
    if status == "finished":
        print(
            f"Stage '{stage.name}': reusing the finished stage in {stage_dir} "
            "(same settings and data)."
        )
    result = checkpoints.fit_stage(
        stage.name,
        model,
        data,
        epochs=epochs,
        steps=steps,
        stage_dir=stage_dir,
        verbose=config.verbose,
        callbacks=state.callbacks,
    )
    if result.resumed_from:
        print(
            f"Stage '{stage.name}': resumed from the backup of epoch "
            f"{result.resumed_from} in {stage_dir}."
        )
    state.result.stages[stage.name] = result


def data_identity(config, splits, labels=True):
    """The data set's name, sizes and a hash of (a sample of) its
    contents and of every label, for the stages' fingerprints; with
    `labels=False`, of the training images alone (for stages that read
    no labels)."""
    return {"dataset": config.dataset, **splits.identity(labels)}


def make_strategy(name):
    """The `tf.distribute.Strategy` a config's `strategy` names, or `None`
    for `"default"`."""
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=os.environ.get("TPU_NAME", "")
    )
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def resolve_strategy(strategy, global_batch_sizes):
    """The strategy to use and a check that each batch splits evenly.

    Args:
        strategy: a `tf.distribute.Strategy` or `None` for the default.
        global_batch_sizes: dict of argument name to global batch size.

    Returns:
        The strategy.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "The keras_ssl.recipes pipelines run on the TensorFlow backend "
            "(tf.distribute strategies, resumable tf.data streams, "
            "TensorBoard logs, SavedModel export). Received: "
            f"backend={backend}. On {backend}, train the models of "
            "keras_ssl.models with fit() on keras_ssl.data streams "
            "(README, 'Backends')."
        )
    import tensorflow as tf

    if strategy is None:
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(
            "`strategy` must be a tf.distribute.Strategy or None. Received: "
            f"strategy={strategy!r}"
        )
    replicas = strategy.num_replicas_in_sync
    for name, size in global_batch_sizes.items():
        if size % replicas:
            raise ValueError(
                f"`{name}` must be divisible by the number of replicas "
                f"({replicas}). Received: {name}={size}"
            )
    return strategy


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
    import keras

    from keras_ssl import data as ssl_data
    from keras_ssl.recipes import datasets

    keras.utils.set_random_seed(config.seed)
    if data is None and config.dataset in STREAMED:
        from keras_ssl.recipes.streams import RecipeStreams

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


# --- Building blocks the recipes' stages share. ---


def encoder(run, depth=None, width=None, any_size=False):
    """The config's ResNet (or another depth / width, for students); with
    `any_size` the input side is open, for multi-crop views."""
    from keras_ssl.backbones import ResNet

    config = run.config
    side = None if any_size else config.image_size
    return ResNet(
        depth=depth or config.depth,
        width_multiplier=width or config.width_multiplier,
        sk_ratio=config.sk_ratio,
        stem=config.stem,
        synchronized_bn=run.sync,
        input_shape=(side, side, 3),
    )


def views(run):
    """The config's `Views` preset, with its crop scale if it sets one."""
    from keras_ssl.layers import Views

    config = run.config
    specs = Views.preset_specs(config.views, size=config.image_size)
    if config.crop_scale is not None:
        specs = [
            dataclasses.replace(spec, scale=tuple(config.crop_scale))
            for spec in specs
        ]
    return Views(specs, seed=config.seed)


def lars(base_learning_rate, batch_size, scaling, total_steps, **kwargs):
    """LARS with a warm-up + cosine schedule on a scaled learning rate;
    `warmup_steps`, `end_fraction` (of the peak), `weight_decay` and
    `momentum` pass through."""
    from keras_ssl.optimizers import LARS
    from keras_ssl.optimizers import WarmupCosineDecay
    from keras_ssl.optimizers import scale_learning_rate

    warmup = kwargs.pop("warmup_steps", 0)
    end = kwargs.pop("end_fraction", 0.0)
    peak = scale_learning_rate(base_learning_rate, batch_size, rule=scaling)
    schedule = WarmupCosineDecay(
        peak,
        total_steps=max(1, total_steps),
        warmup_steps=warmup,
        end_learning_rate=end * peak,
    )
    return LARS(schedule, momentum=kwargs.pop("momentum", 0.9), **kwargs)


def pretrain_optimizer(batch, scaling, end_fraction=0.0):
    """A stage optimizer: LARS at the config's pretraining rate scaled to
    `batch(run)` by `scaling`, with its warm-up and weight decay, decayed
    to `end_fraction` of the peak."""

    def optimizer(run, total_steps):
        config = run.config
        return lars(
            config.learning_rate,
            batch(run),
            scaling(config) if callable(scaling) else scaling,
            total_steps,
            warmup_steps=int(round(config.warmup_fraction * total_steps)),
            weight_decay=config.weight_decay,
            end_fraction=end_fraction,
        )

    return optimizer


def train_images(run):
    """The number of training images."""
    return run.splits.num_train


def labeled_images(run):
    """The number of labeled training images."""
    return run.splits.num_labeled


def classifier_stage(name, build, learning_rate, batch, **kwargs):
    """A stage that trains a `FineTuner` on the labeled subset and reports
    its test accuracy, with SimCLRv2's fine-tuning optimizer (§3.1): LARS
    at `learning_rate(run)·√B`, cosine decay, no warm-up or weight decay.
    Its budget is `{name}_epochs` or `{name}_steps` unless `epochs` and
    `steps` name other fields.

    SimCLR's LARS leaves BatchNorm's scale and offset and the biases out
    of the trust ratio: they take plain momentum steps at the full rate.
    That is safe when BatchNorm normalises by batch statistics, which undo
    a shift upstream; LP-FT keeps the pretrained statistics, nothing undoes
    it, and those steps can diverge (SemPPL on CIFAR-10 with 4,000 labels:
    offsets moved 14x their norm in 12 steps, the loss went from 1.6 to 14
    and the model to chance). So when the stage's model keeps them
    (`FineTuner.frozen_batch_norm`, LP-FT's) every weight's step is scaled
    by its trust ratio.
    """
    role = kwargs.get("role") or name

    def size(run):
        return min(batch(run), labeled_images(run))

    def stream(run):
        offset = 0 if name == "finetune" else 1
        return run.splits.labeled_stream(size(run), seed_offset=offset)

    def optimizer(run, total_steps):
        frozen = getattr(run.models.get(role), "frozen_batch_norm", False)
        return lars(
            learning_rate(run),
            size(run),
            "sqrt",
            total_steps,
            exclude_rank_1=not frozen,
        )

    return Stage(
        name=name,
        build=build,
        data=stream,
        optimizer=optimizer,
        epochs=kwargs.pop("epochs", f"{name}_epochs"),
        steps=kwargs.pop("steps", f"{name}_steps"),
        batch=size,
        examples=labeled_images,
        report=(test_accuracy, *kwargs.pop("report", ())),
        **kwargs,
    )


def finetune_crop(run):
    """The fine-tuning crop's area range: the config's
    `finetune_crop_scale`, else SimCLRv2's (0.08, 1)."""
    scale = run.config.finetune_crop_scale
    return tuple(scale) if scale is not None else (0.08, 1.0)


def fine_tuner(run, head=None, ft_layer=0):
    """A `FineTuner` on the pretrained encoder (and the first `ft_layer`
    layers of `head`), with the fine-tuning crop; with LP-FT its
    BatchNorm keeps the pretrained statistics."""
    from keras_ssl.models import FineTuner

    config = run.config
    return FineTuner(
        run.models["pretrainer"].encoder,
        num_classes=run.splits.num_classes,
        head=head,
        ft_layer=ft_layer,
        image_size=config.image_size,
        crop_scale=finetune_crop(run),
        seed=config.seed,
        frozen_batch_norm=config.linear_probe_first,
    )


def linear_head_first(run, model):
    """LP-FT's first step for a recipe's fine-tuning stage, unless the
    config turns it off: `fine_tuning.linear_head_first` on the labeled
    images, keeping the start for `interpolate_with_start` where the
    config averages with it."""
    from keras_ssl.models import fine_tuning  # Keras: loaded when it runs.

    config = run.config
    if not config.linear_probe_first:
        return
    if run.labeled is None:
        # The labeled subset is streamed, not held: its features would
        # take a pass of their own; the head starts at zero (SimCLRv2).
        print(
            f"Stage '{run.stage}': the classifier starts at zero; the "
            "linear probe's first step needs the labeled images in memory."
        )
        return
    if 0 < len(run.labeled.y) < 2 * config.interpolation_folds:
        raise ValueError(
            f"`interpolation_folds` needs at least 2 labeled images per "
            f"fold: {len(run.labeled.y)} labeled images. Received: "
            f"interpolation_folds={config.interpolation_folds}"
        )
    start = fine_tuning.linear_head_first(model, run.labeled.x, run.labeled.y)
    if config.finetune_interpolation < 1 or config.interpolation_folds:
        run.start_weights[run.stage] = start


def interpolate_with_start(run, model):
    """WiSE-FT for a recipe's fine-tuning stage: the config's
    `finetune_interpolation`, or with `interpolation_folds` the share
    that cross-validation on the labeled images chooses (reported as the
    stage's `finetune_interpolation` metric); see
    `keras_ssl.models.fine_tuning`. Nothing happens without a
    linear-probe start."""
    from keras_ssl.models import fine_tuning  # Keras: loaded when it runs.

    start = run.start_weights.get(run.stage)
    if start is None:
        return
    config = run.config
    share = config.finetune_interpolation
    if config.interpolation_folds:
        share, scores = fine_tuning.cross_validated_share(
            model,
            run.labeled.x,
            run.labeled.y,
            start,
            folds=config.interpolation_folds,
            optimizer=lambda steps: run.current.optimizer(run, steps),
            steps=run.total_steps,
            batch_size=run.current.batch(run),
            seed=config.seed,
        )
        run.result.stages[run.stage].metrics["finetune_interpolation"] = share
        print(
            f"Stage '{run.stage}': {config.interpolation_folds}-fold "
            "cross-validated accuracy of the labeled images by share of "
            "the fine-tuned weights: "
            + ", ".join(f"{a:g}: {v:.1%}" for a, v in scores.items())
            + f"; the model takes {share:g}."
        )
    fine_tuning.interpolate_with_start(model, start, share)


def baseline_stage(finetune_learning_rate, batch):
    """The same network trained from scratch on the same labels, with the
    fine-tuning stage's augmentation, optimizer, batch and step budget at
    its own rate (`config.baseline_learning_rate`, a from-scratch rate);
    it runs with fine-tuning when `config.baselines`."""

    def build(run):
        from keras_ssl.models import FineTuner

        return FineTuner(
            encoder(run),
            num_classes=run.splits.num_classes,
            ft_layer=0,
            crop_scale=finetune_crop(run),
            seed=run.config.seed,
        )

    def learning_rate(run):
        config = run.config
        return config.baseline_learning_rate or finetune_learning_rate(run)

    return classifier_stage(
        "baseline",
        build,
        learning_rate=learning_rate,
        batch=batch,
        epochs="finetune_epochs",
        steps="finetune_steps",
        title="same network from scratch",
        selectable=False,
        when=lambda config: config.baselines and "finetune" in config.stages,
    )


def finetune_and_baseline(build, batch_size=256):
    """PAWS's and SemPPL's fine-tuning (`build(run)` makes the
    `FineTuner`; LP-FT, at `finetune_learning_rate`) and its from-scratch
    baseline."""

    def learning_rate(run):
        return run.config.finetune_learning_rate

    def batch(run):
        return batch_size

    finetune = classifier_stage(
        "finetune",
        build,
        learning_rate=learning_rate,
        batch=batch,
        start="pretrain",
        init=linear_head_first,
        finish=interpolate_with_start,
        role="finetuner",
        title="fine-tuned",
        exports="finetuner",
    )
    return finetune, baseline_stage(learning_rate, batch)


def test_accuracy(run, model):
    """Top-1 test accuracy of a classifier's logits (and top-5 where the
    data gives it: a streamed validation split)."""
    accuracy = run.splits.evaluate_classifier(model)
    metrics = {"test_accuracy": accuracy["top1"]}
    if "top5" in accuracy:
        metrics["test_top5_accuracy"] = accuracy["top5"]
    return metrics


def representation(run, model):
    """k-NN (and, in memory, linear-probe) test accuracy of the
    pretrained encoder's features, from the labeled images only."""
    return run.splits.representation(model)


def last_epoch(*names):
    """A report of the last epoch's value of each history entry named."""

    def report(run, model):
        history = run.result.stages[run.stage].history
        return {n: history[n][-1] for n in names if history.get(n)}

    return report
