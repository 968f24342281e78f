"""What every recipe stage needs: strategy, optimizer, resumable fit."""

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from dataclasses import field

import keras
import numpy as np

from keras_ssl import data as ssl_data
from keras_ssl.backbones import ResNet
from keras_ssl.evaluation import KNNClassifier
from keras_ssl.evaluation import embed
from keras_ssl.layers import Views
from keras_ssl.optimizers import LARS
from keras_ssl.optimizers import WarmupCosineDecay
from keras_ssl.optimizers import scale_learning_rate


@dataclass
class RecipeConfig:
    """The fields every recipe's config shares.

    `SimCLRv2Config`, `PAWSConfig` and `SemPPLConfig` subclass it: each
    redefines the fields whose default differs, adds its method's own and
    has the presets `imagenet()` (the defaults: the paper's ImageNet
    setting), `cifar10()` and `digits()`.

    Attributes:
        dataset: str. The data set `datasets.load` reads: `"digits"`,
            `"cifar10"`, `"npz"` or `"tfds:NAME"`.
        data_dir: str or `None`. Where the data set is (or goes when
            downloaded).
        image_size: int. Side of the images, in pixels.
        labeled_per_class: int or `None`. Labeled training images per
            class. Set this or `labeled_fraction`, not both.
        labeled_fraction: float or `None`. Fraction of each class's
            training images that keep their label.
        seed: int. Seeds Keras, the labeled subset, the digits split, the
            views and the data streams.
        depth: int. ResNet depth.
        width_multiplier: float. ResNet width; fractions give the small
            networks of the CPU presets.
        sk_ratio: float. Selective-kernel ratio; 0 for a plain ResNet.
        stem: str. `"imagenet"` or `"cifar"` (one 3x3 conv, no pooling).
        views: str. The `Views` preset of the pretraining augmentations.
        crop_scale: pair of floats or `None`. When set, the area range of
            every view's random crop.
        batch_size: int. Global batch of unlabeled images in pretraining.
        epochs: int. Pretraining epochs.
        learning_rate: float. Pretraining's base LARS learning rate,
            scaled to the batch size by the recipe's rule.
        warmup_fraction: float. Fraction of pretraining's steps over which
            the learning rate warms up before its cosine decay.
        weight_decay: float. Pretraining's LARS weight decay.
        temperature: float. Softmax temperature of the pretraining loss.
        finetune_epochs: int. Fine-tuning epochs on the labeled subset
            (PAWS and SemPPL skip fine-tuning at 0).
        finetune_learning_rate: float. Fine-tuning's base LARS learning
            rate, scaled by the square root of the batch size.
        stages: tuple of str. The stages to run, of the recipe's
            `STAGES`.
        steps_per_epoch: int or `None`. Steps per epoch of every stage;
            `None` for one pass over the stage's examples.
        output_dir: str. Where the stages keep weights, logs and backups
            (a rerun resumes from them), and where the export goes.
        export: bool. Whether `fit()` exports the final model as a
            SavedModel in `output_dir`.
        verbose: int. `fit()`'s verbosity.
        extra: dict. Free-form settings that the recipe itself ignores.
    """

    # Data.
    dataset: str = "tfds:imagenet2012"
    data_dir: str | None = None
    image_size: int = 224
    labeled_per_class: int | None = None
    labeled_fraction: float | None = 0.1
    seed: int = 0
    # Encoder.
    depth: int = 50
    width_multiplier: float = 1
    sk_ratio: float = 0.0
    stem: str = "imagenet"
    # Pretraining.
    views: str = "simclr_imagenet"
    crop_scale: tuple | None = None
    batch_size: int = 4096
    epochs: int = 100
    learning_rate: float = 0.3
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-6
    temperature: float = 0.1
    # Fine-tuning.
    finetune_epochs: int = 0
    finetune_learning_rate: float = 0.05
    # Run.
    stages: tuple = ("pretrain", "finetune")
    steps_per_epoch: int | None = None
    output_dir: str = "runs"
    export: bool = True
    verbose: int = 1
    extra: dict = field(default_factory=dict)


def check_stages(stages, known):
    """Raises a `ValueError` unless `stages` are some of `known`."""
    unknown = set(stages) - set(known)
    if unknown:
        raise ValueError(
            f"Unknown `stages` {sorted(unknown)}; expected a subset of "
            f"{known}. Received: stages={stages}"
        )


@dataclass
class StageResult:
    """What one stage of a recipe produced.

    Attributes:
        name: str. The stage (`"pretrain"`, `"finetune"`, ...).
        history: dict of per-epoch training metrics.
        metrics: dict of evaluation results after the stage.
        weights_path: str. The stage's final weights.
        log_dir: str. TensorBoard logs.
    """

    name: str
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_path: str = ""
    log_dir: str = ""


@dataclass
class RecipeResult:
    """What a recipe's `fit()` returns.

    Attributes:
        config: the config that ran, overrides applied.
        stages: dict of stage name to `StageResult`, in run order.
        export_path: str or `None`. The SavedModel, when exported.
        seconds: float. Wall time of the whole run.
        models: dict of the trained Keras models by role.
    """

    config: object
    stages: dict = field(default_factory=dict)
    export_path: str | None = None
    seconds: float = 0.0
    models: dict = field(default_factory=dict, repr=False)
    callbacks: tuple = field(default=(), repr=False)

    def summary(self) -> str:
        lines = []
        for name, stage in self.stages.items():
            metrics = ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(stage.metrics.items())
            )
            lines.append(f"{name:>9}: {metrics}")
        return "\n".join(lines)


def resolve_strategy(strategy, global_batch_sizes):
    """The strategy to use and a check that each batch splits evenly.

    Args:
        strategy: a `tf.distribute.Strategy` (`MirroredStrategy`,
            `MultiWorkerMirroredStrategy`, `TPUStrategy`, ...) or `None`
            for the default (one device) strategy.
        global_batch_sizes: dict of argument name to global batch size.

    Returns:
        The strategy.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        # Checked first: every recipe calls this before it loads data.
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


def make_lars(
    base_learning_rate,
    batch_size,
    scaling,
    total_steps,
    warmup_steps=0,
    weight_decay=0.0,
    momentum=0.9,
):
    """LARS with a warm-up + cosine schedule on a scaled learning rate."""
    peak = scale_learning_rate(base_learning_rate, batch_size, rule=scaling)
    schedule = WarmupCosineDecay(
        peak, total_steps=max(1, total_steps), warmup_steps=warmup_steps
    )
    return LARS(schedule, momentum=momentum, weight_decay=weight_decay)


def pretrain_optimizer(config, batch_size, scaling, total_steps):
    """`make_lars` with the config's pretraining learning rate, warm-up
    (`warmup_fraction` of `total_steps`) and weight decay."""
    return make_lars(
        config.learning_rate,
        batch_size,
        scaling,
        total_steps=total_steps,
        warmup_steps=int(round(config.warmup_fraction * total_steps)),
        weight_decay=config.weight_decay,
    )


def run_stage(name, model, data, config, result, *, epochs, steps):
    """`fit_stage` in the config's `output_dir`, with its verbosity and the
    run's callbacks; records the stage in `result.stages[name]`.

    Returns:
        The `StageResult`.
    """
    stage = fit_stage(
        name,
        model,
        data,
        epochs=epochs,
        steps_per_epoch=steps,
        output_dir=config.output_dir,
        verbose=config.verbose,
        callbacks=result.callbacks,
    )
    result.stages[name] = stage
    return stage


def finish_run(result, final, started, **models):
    """Exports `final` when the config asks for it, records the `models` by
    role and the seconds since `started` (a `time.time()`).

    Returns:
        `result`.
    """
    config = result.config
    if config.export:
        from keras_ssl.export import export_saved_model

        result.export_path = os.path.join(config.output_dir, "saved_model")
        export_saved_model(final, result.export_path)
    result.models.update(models)
    result.seconds = time.time() - started
    return result


def fit_stage(
    name,
    model,
    data,
    *,
    epochs,
    output_dir,
    steps_per_epoch=None,
    verbose=1,
    callbacks=(),
):
    """Trains one stage so that an interrupted run resumes where it was.

    The stage's weights (optimizer, queues and EMA networks included) are
    backed up after every epoch and restored by the next call with the same
    `output_dir`; a finished stage is loaded instead of retrained.

    Returns:
        A `StageResult`.
    """
    stage_dir = os.path.join(output_dir, name)
    os.makedirs(stage_dir, exist_ok=True)
    result = StageResult(
        name=name,
        weights_path=os.path.join(stage_dir, "final.weights.h5"),
        log_dir=os.path.join(stage_dir, "logs"),
    )
    record = os.path.join(stage_dir, "history.json")
    if os.path.exists(record) and os.path.exists(result.weights_path):
        _build_optimizer(model)
        model.load_weights(result.weights_path)
        with open(record) as f:
            result.history = json.load(f)
        return result
    # Built here, the optimizer's variables exist before the first trace;
    # built inside it, TensorFlow traces the training step twice.
    _build_optimizer(model)
    backup_dir = os.path.join(stage_dir, "backup")
    data = _resume_stream(data, backup_dir, steps_per_epoch)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.TensorBoard(result.log_dir, write_graph=False),
        *callbacks,
    ]
    history = model.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        # The recipes' streams shuffle themselves, deterministically.
        shuffle=False,
    )
    result.history = {
        k: [float(v) for v in values] for k, values in history.history.items()
    }
    model.save_weights(result.weights_path)
    with open(record, "w") as f:
        json.dump(result.history, f)
    return result


def _build_optimizer(model):
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _resume_stream(data, backup_dir, steps_per_epoch):
    """The stream as `fit()` should see it, past the batches an interrupted
    run already trained on.

    The recipes' streams are infinite and batch `i` depends on `i` alone,
    so a resumed run sees exactly the batches the uninterrupted run would.
    On TensorFlow the stream becomes a `tf.data.Dataset`, which also gives
    its batches a static shape.
    """
    offset = 0
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(metadata) and steps_per_epoch:
        with open(metadata) as f:
            offset = json.load(f)["epoch"] * steps_per_epoch
    if getattr(data, "num_batches", 0) is not None:
        return data
    if keras.backend.backend() == "tensorflow":
        dataset = data.to_tf_dataset()
        return dataset.skip(offset) if offset else dataset
    return _Offset(data, offset) if offset else data


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


def build_encoder(
    config, depth=None, width=None, synchronized_bn=False, any_size=False
):
    """The config's ResNet (or another depth / width, for students).

    With `any_size` the input side is left open, for multi-crop methods
    whose small views have another resolution.
    """
    side = None if any_size else config.image_size
    return ResNet(
        depth=depth or config.depth,
        width_multiplier=width or config.width_multiplier,
        sk_ratio=config.sk_ratio,
        stem=config.stem,
        synchronized_bn=synchronized_bn,
        input_shape=(side, side, 3),
    )


def load_data(config):
    """Seeds Keras, loads the config's data set and its labeled subset.

    Returns:
        `(splits, labeled)`: a `datasets.ArraySplits` and the
        `keras_ssl.data.LabeledSubset` of its training images.
    """
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


def knn_accuracy(model, splits, num_train=10000):
    """k-NN (k = 200, τ = 0.1) test accuracy of a pretrainer's encoder
    output, with the first `num_train` training images as the memory."""
    train = embed(
        model, splits.x_train[:num_train], batch_size=256, output="embedding"
    )
    test = embed(model, splits.x_test, batch_size=256, output="embedding")
    knn = KNNClassifier(k=200, temperature=0.1, num_classes=splits.num_classes)
    knn.fit(train, splits.y_train[:num_train])
    return knn.evaluate(test, splits.y_test)


def config_from_command_line(config_cls, stages, prog, argv=None):
    """The preset named by `--preset` with the other flags applied."""
    args = vars(
        parse_overrides(
            config_cls, ("digits", "cifar10", "imagenet"), stages, prog, argv
        )
    )
    preset = getattr(config_cls, args.pop("preset"))
    overrides = {k: v for k, v in args.items() if v is not None}
    return dataclasses.replace(preset(), **overrides)


def build_views(config):
    """The config's `Views` preset, with its crop scale if it sets one."""
    specs = Views.preset_specs(config.views, size=config.image_size)
    if config.crop_scale is not None:
        specs = [
            dataclasses.replace(spec, scale=tuple(config.crop_scale))
            for spec in specs
        ]
    return Views(specs, seed=config.seed)


def train_classifier(
    name,
    model,
    config,
    result,
    splits,
    labeled,
    *,
    learning_rate,
    epochs,
    batch_size,
):
    """Trains a classifier on the labeled subset and tests it.

    SimCLRv2's fine-tuning optimizer (§3.1): LARS at `learning_rate·√B`,
    cosine decay, no warm-up and no weight decay. Records the stage, with
    its test accuracy, in `result.stages[name]`.
    """
    batch = min(batch_size, len(labeled.y))
    steps = steps_per_epoch(config, len(labeled.y), batch)
    model.compile(
        optimizer=make_lars(
            learning_rate, batch, "sqrt", total_steps=steps * epochs
        )
    )
    stream = ssl_data.from_arrays(
        labeled.x, labeled.y, batch_size=batch, seed=config.seed, repeat=True
    )
    stage = run_stage(
        name, model, stream, config, result, epochs=epochs, steps=steps
    )
    stage.metrics["test_accuracy"] = test_accuracy(
        model, splits.x_test, splits.y_test
    )
    return model


def steps_per_epoch(config, num_examples, batch_size):
    """`config.steps_per_epoch`, else one pass over the examples."""
    return config.steps_per_epoch or max(1, num_examples // batch_size)


def test_accuracy(model, x, y):
    """Top-1 accuracy of a classifier's logits on `(x, y)`."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def parse_overrides(config_cls, presets, stages, prog, argv=None):
    """A command line with `--preset` and one flag per config field."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--preset", default=presets[0], choices=presets)
    for f in dataclasses.fields(config_cls):
        if f.name in ("stages", "extra", "crop_scale"):
            continue
        annotation = str(f.type)
        kind = str
        for candidate in (bool, float, int):
            if candidate.__name__ in annotation:
                kind = candidate
                break
        parser.add_argument(f"--{f.name}", type=_parser_type(kind))
    parser.add_argument("--stages", nargs="+", choices=stages, type=str)
    parser.add_argument(
        "--crop_scale", nargs=2, type=float, metavar=("MIN", "MAX")
    )
    args = parser.parse_args(argv)
    if args.stages is not None:
        args.stages = tuple(args.stages)
    return args


def _parser_type(kind):
    if kind is bool:
        return lambda text: text.lower() in ("1", "true", "yes")
    if kind in (int, float):
        return lambda text: None if text.lower() == "none" else kind(text)
    return lambda text: None if text.lower() == "none" else text
