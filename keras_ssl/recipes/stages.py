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
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Callable

import numpy as np

from keras_ssl.recipes.config import RUN_FIELDS


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
        start: str or `None`. The stage whose trained models it uses.
        report: tuple of `(run, model) -> dict` metrics after training.
        role: str. The model's key in `RecipeResult.models`.
        exports: bool. Whether the model is exported when it is the last
            one trained.
        selectable: bool. Whether `config.stages` chooses it; otherwise it
            runs whenever its epochs are > 0.
    """

    name: str
    build: Callable
    data: Callable
    optimizer: Callable
    epochs: str
    batch: Callable
    examples: Callable
    start: str | None = None
    report: tuple = ()
    role: str = ""
    exports: bool = True
    selectable: bool = True

    def runs(self, config):
        chosen = self.name in config.stages or not self.selectable
        return chosen and getattr(config, self.epochs) > 0


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
    """

    config: object
    splits: object
    labeled: object
    sync: bool
    result: object
    callbacks: tuple = ()
    models: dict = field(default_factory=dict)
    stage: str = ""


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


def run(config, stages, *, strategy=None, callbacks=(), result_cls=None):
    """Runs `stages` for `config` and returns a `RecipeResult`.

    Each stage that runs is checked against its folder in `output_dir`
    (see `checkpoints.prepare`), trained or reused, and reported on; the
    last exportable model trained is exported when `config.export`.
    """
    from keras_ssl.recipes import checkpoints
    from keras_ssl.recipes import reports

    result = (result_cls or reports.RecipeResult)(config=config)
    strategy = resolve_strategy(strategy, config.global_batch_sizes())
    splits, labeled = load_data(config)
    reads = _Reads(config)
    sync = strategy.num_replicas_in_sync > 1
    state = Run(reads, splits, labeled, sync, result, tuple(callbacks))
    identity = data_identity(config, splits, labeled)
    prints, final = {}, None
    with strategy.scope():
        for stage in _needed(stages, config):
            reads.names.clear()
            state.stage = stage.name
            model = stage.build(state)
            state.models[stage.role or stage.name] = model
            if not stage.runs(config):
                built = {n: getattr(config, n) for n in sorted(reads.names)}
                prints[stage.name] = {"built": built}
                continue
            data = stage.data(state)
            steps = reads.steps_per_epoch or max(
                1, stage.examples(state) // stage.batch(state)
            )
            epochs = getattr(reads, stage.epochs)
            model.compile(optimizer=stage.optimizer(state, steps * epochs))
            prints[stage.name] = _fingerprint(stage, reads, identity, prints)
            _train(stage, state, model, data, steps, prints[stage.name])
            for report in stage.report:
                result.stages[stage.name].metrics.update(report(state, model))
            final = model if stage.exports else final
    if final is None and stages:
        final = state.models[stages[0].role or stages[0].name]
    if config.export and final is not None:
        checkpoints.check_finite(final, "The model to export")
        reports.export(result, final)
    result.models.update(state.models)
    result.seconds = time.time() - result.started
    return result


def _needed(stages, config):
    """The stages that run and those whose models a running one uses; the
    first stage is always built (so `stages=()` gives its network)."""
    needed = {stages[0].name} if stages else set()
    for stage in reversed(stages):
        if stage.runs(config) or stage.name in needed:
            needed.add(stage.name)
            if stage.start:
                needed.add(stage.start)
    return [s for s in stages if s.name in needed]


def _fingerprint(stage, reads, identity, prints):
    """The config fields the stage read, the data's identity and a digest
    of the fingerprint of the stage it starts from."""
    config = reads._config
    names = reads.names | {"seed", "dataset", "image_size"}
    start = prints.get(stage.start) if stage.start else None
    return {
        "fields": {n: getattr(config, n) for n in sorted(names)},
        "data": identity,
        "start": hashlib.sha256(repr(start).encode()).hexdigest()[:16],
        "start_stage": stage.start,
    }


def _train(stage, state, model, data, steps, fingerprint):
    from keras_ssl.recipes import checkpoints

    config = state.config
    stage_dir = os.path.join(config.output_dir, stage.name)
    status = checkpoints.prepare(stage_dir, fingerprint, config.overwrite)
    if status == "finished":
        print(
            f"Stage '{stage.name}': reusing the finished stage in {stage_dir} "
            "(same settings and data)."
        )
    result = checkpoints.fit_stage(
        stage.name,
        model,
        data,
        epochs=getattr(config, stage.epochs),
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


def data_identity(config, splits, labeled):
    """The data set's name, sizes and a hash of a sample of its contents
    and of every label, for the stages' fingerprints."""
    digest = hashlib.sha256()
    for array in (splits.x_train, splits.y_train, labeled.x, labeled.y):
        if array is None:
            continue
        step = max(1, len(array) // 512)
        digest.update(np.ascontiguousarray(array[::step]).tobytes())
    digest.update(np.ascontiguousarray(labeled.y).tobytes())
    return {
        "dataset": config.dataset,
        "train": int(len(splits.x_train)),
        "test": int(len(splits.x_test)),
        "labeled": int(len(labeled.y)),
        "hash": digest.hexdigest()[:16],
    }


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


def load_data(config):
    """Seeds Keras, loads the config's data set and its labeled subset.

    Returns:
        `(splits, labeled)`: a `datasets.ArraySplits` and the
        `keras_ssl.data.LabeledSubset` of its training images.
    """
    import keras

    from keras_ssl import data as ssl_data
    from keras_ssl.recipes import datasets

    keras.utils.set_random_seed(config.seed)
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
    return len(run.splits.x_train)


def classifier_stage(name, build, learning_rate, batch, **kwargs):
    """A stage that trains a `FineTuner` on the labeled subset and reports
    its test accuracy, with SimCLRv2's fine-tuning optimizer (§3.1): LARS
    at `learning_rate(run)·√B`, cosine decay, no warm-up or weight decay.
    """

    def size(run):
        return min(batch(run), len(run.labeled.y))

    def stream(run):
        from keras_ssl import data as ssl_data

        return ssl_data.from_arrays(
            run.labeled.x,
            run.labeled.y,
            batch_size=size(run),
            seed=run.config.seed,
            repeat=True,
        )

    def optimizer(run, total_steps):
        return lars(learning_rate(run), size(run), "sqrt", total_steps)

    return Stage(
        name=name,
        build=build,
        data=stream,
        optimizer=optimizer,
        epochs=kwargs.pop("epochs", f"{name}_epochs"),
        batch=size,
        examples=lambda run: len(run.labeled.y),
        report=(test_accuracy, *kwargs.pop("report", ())),
        **kwargs,
    )


def test_accuracy(run, model):
    """Top-1 test accuracy of a classifier's logits."""
    logits = model.predict(run.splits.x_test, batch_size=256, verbose=0)
    correct = np.argmax(logits, -1) == run.splits.y_test
    return {"test_accuracy": float(np.mean(correct))}


def last_epoch(*names):
    """A report of the last epoch's value of each history entry named."""

    def report(run, model):
        history = run.result.stages[run.stage].history
        return {n: history[n][-1] for n in names if history.get(n)}

    return report
