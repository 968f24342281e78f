"""PAWS end to end: pretrain with support samples, PAWS-NN, fine-tune.

```
python -m keras_ssl.recipes.paws                     # digits, no download
python -m keras_ssl.recipes.paws --preset cifar10 --data_dir DIR
```
"""

import dataclasses
import time
from dataclasses import dataclass

from keras_ssl import data as ssl_data
from keras_ssl.evaluation import SoftNearestNeighbour
from keras_ssl.evaluation import embed
from keras_ssl.layers import ProjectionHead
from keras_ssl.models import FineTuner
from keras_ssl.models import PAWSPretrainer
from keras_ssl.recipes.training import RecipeConfig
from keras_ssl.recipes.training import RecipeResult
from keras_ssl.recipes.training import build_encoder
from keras_ssl.recipes.training import build_views
from keras_ssl.recipes.training import check_stages
from keras_ssl.recipes.training import config_from_command_line
from keras_ssl.recipes.training import finish_run
from keras_ssl.recipes.training import load_data
from keras_ssl.recipes.training import pretrain_optimizer
from keras_ssl.recipes.training import resolve_strategy
from keras_ssl.recipes.training import run_stage
from keras_ssl.recipes.training import steps_per_epoch
from keras_ssl.recipes.training import train_classifier

STAGES = ("pretrain", "finetune")


@dataclass
class PAWSConfig(RecipeConfig):
    """Everything `fit()` needs; the defaults are the paper's ImageNet ones.

    PAWS §5 and Appendix A: ResNet-50, 960 classes × 7 images per support
    batch, 2 global + 6 local views, LARS warmed up from 0.3 to 6.4 over 10
    epochs then cosine-decayed, weight decay 1e-6, τ = 0.1, T = 0.25,
    ME-MAX, label smoothing 0.1, 100 epochs (1% or 10% labels). Presets:
    `PAWSConfig.imagenet()`, `.cifar10()` (Appendix C: 4,000 labels,
    10 classes × 64 images, two views of each support image) and
    `.digits()` (small, no download).

    The fields all recipes share are documented in `RecipeConfig`.
    """

    # `RecipeConfig` fields with other defaults.
    views: str = "paws_imagenet"
    learning_rate: float = 6.4
    output_dir: str = "runs/paws"
    # Head.
    head_layers: int = 3
    projection_dim: int = 2048
    # Support batches.
    classes_per_batch: int = 960
    images_per_class: int = 7
    support_views: int = 1
    # Loss.
    sharpen_temperature: float = 0.25
    label_smoothing: float = 0.1
    me_max: bool = True

    @classmethod
    def imagenet(cls, **overrides):
        """The paper's ImageNet setting (10% labels; 64 V100s)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def cifar10(cls, **overrides):
        """CIFAR-10 with 4,000 labels (Appendix C), CIFAR-stem ResNet-18.

        The paper uses a WRN-28-2 at batch 256 for 600 epochs; keras_ssl
        has no WRN, so this preset uses the CIFAR-stem ResNet-18.
        """
        config = cls(
            dataset="cifar10",
            image_size=32,
            labeled_per_class=400,
            labeled_fraction=None,
            depth=18,
            stem="cifar",
            projection_dim=128,
            views="paws_cifar",
            batch_size=256,
            classes_per_batch=10,
            images_per_class=64,
            support_views=2,
            epochs=600,
            learning_rate=3.2,
            warmup_fraction=0.02,
            output_dir="runs/paws_cifar10",
        )
        return dataclasses.replace(config, **overrides)

    @classmethod
    def digits(cls, **overrides):
        """scikit-learn's 8×8 digits at 16 px with 10 labels per class."""
        config = cls.cifar10(
            dataset="digits",
            image_size=16,
            labeled_per_class=10,
            width_multiplier=0.25,
            views="paws_cifar",
            crop_scale=None,
            batch_size=128,
            images_per_class=4,
            epochs=20,
            learning_rate=8.0,
            finetune_epochs=30,
            output_dir="runs/paws_digits",
        )
        return dataclasses.replace(config, **overrides)

    def validate(self):
        check_stages(self.stages, STAGES)
        for name in ("temperature", "sharpen_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` must be > 0. Received: "
                    f"{name}={getattr(self, name)}"
                )


class PAWSResult(RecipeResult):
    """What `fit()` returns: one `StageResult` per stage, and paths."""


def paws_nn_accuracy(model, labeled, splits, config):
    """PAWS-NN: soft nearest neighbours of the test projections among the
    labeled images' projections (PAWS §5, τ as in training)."""
    support = embed(model, labeled.x, batch_size=256, output="projection")
    queries = embed(model, splits.x_test, batch_size=256, output="projection")
    classifier = SoftNearestNeighbour(
        temperature=config.temperature, num_classes=splits.num_classes
    )
    classifier.fit(support, labeled.y)
    return classifier.evaluate(queries, splits.y_test)


def fit(config=None, *, strategy=None, callbacks=(), **overrides):
    """Runs PAWS: pretrain → PAWS-NN evaluation → optional fine-tuning.

    Args:
        config: `PAWSConfig`. Defaults to `PAWSConfig.digits()`.
        strategy: optional `tf.distribute.Strategy`.
        callbacks: extra `keras.callbacks.Callback`s for every stage.
        **overrides: fields of `config` to replace.

    Returns:
        A `PAWSResult`.
    """
    started = time.time()
    config = dataclasses.replace(config or PAWSConfig.digits(), **overrides)
    config.validate()
    support_size = config.classes_per_batch * config.images_per_class
    strategy = resolve_strategy(
        strategy,
        {"batch_size": config.batch_size, "support batch": support_size},
    )
    splits, labeled = load_data(config)
    # Validates classes and class sizes before anything trains.
    sampler = ssl_data.SupportSampler(
        labeled.x,
        labeled.y,
        classes_per_batch=config.classes_per_batch,
        images_per_class=config.images_per_class,
        num_classes=splits.num_classes,
        seed=config.seed,
    )
    result = PAWSResult(config=config, callbacks=tuple(callbacks))
    sync = strategy.num_replicas_in_sync > 1
    with strategy.scope():
        model = _pretrain(config, result, splits, sampler, sync)
        if "pretrain" in result.stages:
            result.stages["pretrain"].metrics["paws_nn_accuracy"] = (
                paws_nn_accuracy(model, labeled, splits, config)
            )
        final = model
        if "finetune" in config.stages and config.finetune_epochs:
            final = _finetune(config, result, model, splits, labeled)
    return finish_run(result, final, started, pretrainer=model)


def _pretrain(config, result, splits, sampler, sync):
    model = PAWSPretrainer(
        build_encoder(config, synchronized_bn=sync, any_size=True),
        num_classes=splits.num_classes,
        head=ProjectionHead(
            num_layers=config.head_layers,
            output_dim=config.projection_dim,
            synchronized_bn=sync,
        ),
        views=build_views(config),
        support_views=config.support_views,
        temperature=config.temperature,
        sharpen_temperature=config.sharpen_temperature,
        label_smoothing=config.label_smoothing,
        me_max=config.me_max,
    )
    if "pretrain" not in config.stages:
        return model
    steps = steps_per_epoch(config, len(splits.x_train), config.batch_size)
    model.compile(
        optimizer=pretrain_optimizer(
            config,
            config.batch_size,
            # PAWS states its peak rate directly (6.4 at batch 4096).
            "linear",
            total_steps=steps * config.epochs,
        )
    )
    stream = ssl_data.semi_supervised(
        splits.x_train,
        unlabeled_batch_size=config.batch_size,
        support=sampler,
        seed=config.seed,
        repeat=True,
    )
    run_stage(
        "pretrain",
        model,
        stream,
        config,
        result,
        epochs=config.epochs,
        steps=steps,
    )
    return model


def _finetune(config, result, pretrainer, splits, labeled):
    """Appendix C: fine-tune the encoder and the first head layer."""
    model = FineTuner(
        pretrainer.encoder,
        num_classes=splits.num_classes,
        head=pretrainer.head,
        ft_layer=1,
        image_size=config.image_size,
        seed=config.seed,
    )
    return train_classifier(
        "finetune",
        model,
        config,
        result,
        splits,
        labeled,
        learning_rate=config.finetune_learning_rate,
        epochs=config.finetune_epochs,
        batch_size=256,
    )


def main(argv=None):
    result = fit(
        config_from_command_line(
            PAWSConfig, STAGES, "python -m keras_ssl.recipes.paws", argv
        )
    )
    print(f"\nPAWS on {result.config.dataset} ({result.seconds:.0f} s):")
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
