"""Building blocks of the recipes' stages: the encoder, the views, the
optimizers, the pretraining stage, the classifier stages (fine-tuning
with LP-FT and WiSE-FT, the from-scratch baseline) and their reports.

Each block reads the run's config and asks the run's data (arrays or
streams alike) for its batches and evaluations. Keras is imported when a
stage runs, not with this module.
"""

import dataclasses
import os

from keras_ssl.recipes.runner import Stage


def encoder(run, depth=None, width=None, any_size=False):
    """The config's ResNet (or another depth / width, for students); with
    `any_size` the input side is open, for multi-crop views."""
    # Keras: loaded when the stage is built, not with the command line.
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
    # Keras: loaded when the stage is built, not with the command line.
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
    # Keras: loaded when the stage is built, not with the command line.
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


def pretrain_stage(
    build, data, batch, scaling, report, end_fraction=0.0, labels=None
):
    """The recipes' pretraining stage: `build(run)` trained on
    `data(run)`, batches of `batch(run)` images with one pass over the
    training images per epoch, for `epochs` or `pretrain_steps`, with
    `pretrain_optimizer(batch, scaling, end_fraction)`; it reports
    `report` (a tuple of `(run, model) -> dict`) and then the encoder's
    `representation`, and exports the pretrainer.

    Args:
        build: `(run) -> keras.Model`. The pretrainer.
        data: `(run) -> stream`. Its training stream.
        batch: `(run) -> int`. Images per step.
        scaling: str or `(config) -> str`. The learning rate's scaling
            in the batch (`"linear"` or `"sqrt"`).
        report: tuple of the recipe's own reports.
        end_fraction: float. The final learning rate, as a fraction of
            the peak. Defaults to 0.
        labels: `(config) -> bool` or `None`. Whether pretraining reads
            labels; `None`: always.
    """
    return Stage(
        "pretrain",
        build=build,
        data=data,
        optimizer=pretrain_optimizer(batch, scaling, end_fraction),
        epochs="epochs",
        batch=batch,
        examples=train_images,
        steps="pretrain_steps",
        report=(*report, representation),
        role="pretrainer",
        exports="pretrainer",
        labels=labels,
        monitors=pretrain_monitors,
    )


def pretrain_monitors(run, model):
    """The pretraining's monitors: the k-NN monitor (`knn_monitor`) and
    a TensorBoard grid of the pretrainer's views of the first training
    images (`keras_ssl.evaluation.tensorboard_images.ViewsGrid`), where
    the images are in memory."""
    monitors = knn_monitor(run, model)
    images = run.splits.sample_images(8)
    if images is not None and getattr(model, "views", None) is not None:
        # Keras: loaded when run.
        from keras_ssl.evaluation.tensorboard_images import ViewsGrid
        from keras_ssl.recipes.checkpoints import log_dir

        stage_dir = os.path.join(run.config.output_dir, run.stage)
        train = os.path.join(log_dir(stage_dir), "train")
        monitors.append(ViewsGrid(images, train))
    return monitors


def knn_monitor(run, model):
    """The pretraining's k-NN monitor (`keras_ssl.evaluation.KNNMonitor`):
    every `knn_monitor_every` epochs (and after the last), the weighted
    k-NN accuracy (k = 200, τ = 0.1, as the report's) of the encoder's
    features of the labeled images, 5-fold cross-validated on them (no
    test image is read during training), as `labeled_knn_accuracy` in the
    stage's history and TensorBoard log. None where the period is 0, the
    labeled images are streamed or fewer than 2."""
    config = run.config
    every = config.knn_monitor_every
    if not every or run.labeled is None or len(run.labeled.y) < 2:
        return []
    # Keras: loaded when run.
    from keras_ssl.evaluation import KNNMonitor
    from keras_ssl.recipes.reports import evaluation_batch

    return [
        KNNMonitor(
            run.labeled.x,
            run.labeled.y,
            output="embedding",
            every=every,
            num_classes=run.splits.num_classes,
            folds=min(5, len(run.labeled.y)),
            batch_size=evaluation_batch(run.labeled),
            seed=config.seed,
            name="labeled_knn_accuracy",
        )
    ]


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
    # Keras: loaded when the stage is built, not with the command line.
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
        # Keras: loaded when the stage is built, not with the command line.
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
