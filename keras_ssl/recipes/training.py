"""What every recipe stage needs: strategy, optimizer, resumable fit."""

import argparse
import dataclasses
import json
import os
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
    stage = fit_stage(
        name,
        model,
        stream,
        epochs=epochs,
        steps_per_epoch=steps,
        output_dir=config.output_dir,
        verbose=config.verbose,
        callbacks=result.callbacks,
    )
    stage.metrics["test_accuracy"] = test_accuracy(
        model, splits.x_test, splits.y_test
    )
    result.stages[name] = stage
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
