"""PAWS end to end: pretrain with support samples, PAWS-NN, fine-tune.

```
python -m keras_ssl.recipes.paws                     # digits, no download
python -m keras_ssl.recipes.paws --preset cifar10 --data_dir DIR
```
"""

import dataclasses
import sys
from dataclasses import dataclass

from keras_ssl.recipes import stages
from keras_ssl.recipes.config import CIFAR10
from keras_ssl.recipes.config import CIFAR10_CPU
from keras_ssl.recipes.config import DIGITS
from keras_ssl.recipes.config import RecipeConfig
from keras_ssl.recipes.config import main as config_main
from keras_ssl.recipes.config import preset
from keras_ssl.recipes.recipe_fit import recipe_fit


@dataclass
class PAWSConfig(RecipeConfig):
    """Everything `fit()` needs; the defaults are the paper's ImageNet ones.

    PAWS §5 and Appendix A: ResNet-50, batch 4096, 960 classes × 7 images
    per support batch, 2 global + 6 local views, LARS warmed up over 10
    epochs to 6.4 (0.4·B/256 at B = 4096) then cosine-decayed to 1% of the
    peak, weight decay 1e-6, τ = 0.1, T = 0.25, ME-MAX, label smoothing
    0.1, a 3-layer projection head with a 2-layer prediction head, 100
    epochs (1% or 10% labels). Presets:
    `PAWSConfig.imagenet()`, `.cifar10()` (Appendix C: 4,000 labels,
    10 classes × 64 images, two views of each support image) and
    `.digits()` (small, no download).

    Attributes:
        head_layers: int. Layers of the projection head.
        projection_dim: int. Output size of the projection head.
        classes_per_batch: int. Classes in each support batch.
        images_per_class: int. Labeled images of each class in it.
        support_views: int. Views of each support image.
        sharpen_temperature: float. T of the target sharpening.
        label_smoothing: float. Smoothing of the support labels, in [0, 1).
        me_max: bool. Whether the ME-MAX regulariser is on.
        ft_layer: int. Head layers kept for fine-tuning (Appendix C: 1).
        prediction_head: bool. Whether a 2-layer prediction head (PAWS §5,
            "to facilitate comparison with BYOL") follows the projection
            head.
    """

    STAGE_NAMES = ("pretrain", "finetune")

    # `RecipeConfig` fields with other defaults.
    views: str = "paws_imagenet"
    # Scaled linearly by B/256: 6.4 at the paper's batch of 4096 (§5).
    learning_rate: float = 0.4
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
    prediction_head: bool = True
    # Fine-tuning.
    ft_layer: int = 1

    @preset
    def imagenet(cls):
        """The paper's ImageNet setting (10% labels; 64 V100s)."""
        return cls()

    @preset
    def cifar10(cls):
        """CIFAR-10 with 4,000 labels (Appendix C), CIFAR-stem ResNet-18.

        The paper uses a WRN-28-2 at batch 256 for 600 epochs; keras_ssl
        has no WRN, so this preset uses the CIFAR-stem ResNet-18.
        """
        return cls(
            **CIFAR10,
            projection_dim=128,
            views="paws_cifar",
            batch_size=256,
            classes_per_batch=10,
            images_per_class=64,
            support_views=2,
            epochs=600,
            learning_rate=3.2,
            warmup_fraction=10 / 600,
            prediction_head=False,
            output_dir="runs/paws_cifar10",
        )

    @preset
    def cifar10_cpu(cls):
        """CIFAR-10 with 250 labels (25 per class) in under half an hour
        on two CPU cores.

        What it trades for that: a CIFAR-stem ResNet-18 at a quarter of
        the width, 600 pretraining steps of batch 128 (1.5 epochs) at
        the digits' rate, support batches of 10 images per class, no
        ME-MAX (see `digits()`), and LP-FT from the encoder's output on
        crops of at least 80% of the image (docs/benchmarks.md).
        """
        return cls.cifar10(
            **CIFAR10_CPU,
            batch_size=128,
            images_per_class=10,
            me_max=False,
            pretrain_steps=600,
            ft_layer=0,
            output_dir="runs/paws_cifar10_cpu",
        )

    @preset
    def digits(cls):
        """scikit-learn's 8×8 digits at 16 px with 10 labels per class.

        Without ME-MAX: in runs of a few hundred steps it drives the
        network to the state where every embedding is equally near every
        class (support accuracy 0, every target the uniform 1/K, loss 0),
        which the consistency term cannot leave at this budget. With it
        the 20 epochs end at 34.3% PAWS-NN; without it at 96.1%
        (docs/benchmarks.md, "PAWS and ME-MAX in short runs").
        suncet's own PAWS does the same at this budget: with ME-MAX its
        targets stay near uniform and its k-NN ends 6 points lower
        (docs/parity.md, "PAWS (suncet)").
        """
        return cls.cifar10(
            **DIGITS,
            views="paws_cifar",
            crop_scale=None,
            images_per_class=4,
            epochs=20,
            me_max=False,
            # From the encoder: on a validation split of the training
            # images, 72.1% vs 64.2% from the head's first layer.
            ft_layer=0,
            output_dir="runs/paws_digits",
        )

    def checks(self):
        return super().checks() + (
            ("head_layers", "int>=1"),
            ("projection_dim", "int>=1"),
            ("classes_per_batch", "int>=1"),
            ("images_per_class", "int>=1"),
            ("support_views", "int>=1"),
            ("sharpen_temperature", ">0"),
            ("label_smoothing", "[0,1)"),
            ("me_max", "bool"),
            ("prediction_head", "bool"),
            ("ft_layer", "int>=0"),
        )

    def global_batch_sizes(self):
        support = self.classes_per_batch * self.images_per_class
        return {"batch_size": self.batch_size, "support batch": support}


def _pretrainer(run):
    # Keras: loaded when the stage is built, not with the command line.
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.models import PAWSPretrainer

    config = run.config
    # The reference's head: biased `Dense` layers, BatchNorm and ReLU after
    # each but the last, hidden width = the encoder's features.
    head = ProjectionHead(
        num_layers=config.head_layers,
        output_dim=config.projection_dim,
        synchronized_bn=run.sync,
        use_bias=True,
        batch_norm=[True] * (config.head_layers - 1) + [False],
    )
    pretrainer = PAWSPretrainer(
        stages.encoder(run, any_size=True),
        num_classes=run.splits.num_classes,
        head=head,
        prediction_head=(
            prediction_head(config.projection_dim, run.sync)
            if config.prediction_head
            else None
        ),
        views=stages.views(run),
        support_views=config.support_views,
        temperature=config.temperature,
        sharpen_temperature=config.sharpen_temperature,
        label_smoothing=config.label_smoothing,
        me_max=config.me_max,
    )
    # The encoder takes any size (multi-crop views); an export resizes
    # the images it serves to this side.
    pretrainer.image_size = config.image_size
    return pretrainer


def prediction_head(dim, synchronized_bn=False):
    """PAWS's 2-layer prediction head with a 4× bottleneck, as the
    reference builds it: BatchNorm, `Dense(dim // 4)`, BatchNorm, ReLU,
    `Dense(dim)`."""
    # Keras: loaded when the stage is built, not with the command line.
    import keras

    from keras_ssl.layers.fused_batch_normalization import batch_normalization

    return keras.Sequential(
        [
            batch_normalization(synchronized_bn, epsilon=1e-5),
            keras.layers.Dense(max(1, dim // 4)),
            batch_normalization(synchronized_bn, epsilon=1e-5),
            keras.layers.ReLU(),
            keras.layers.Dense(dim),
        ],
        name="prediction_head",
    )


def _stream(run):
    """Unlabeled batches with class-balanced support batches; the data
    checks the classes and their sizes before anything trains."""
    config = run.config
    support = (config.classes_per_batch, config.images_per_class)
    return run.splits.pretrain_stream(config.batch_size, support=support)


def paws_nn_accuracy(model, labeled, splits, config):
    """PAWS-NN: soft nearest neighbours of the test projections among the
    labeled images' projections (PAWS §5, τ as in training).

    Args:
        model: a `PAWSPretrainer`.
        labeled: `keras_ssl.data.LabeledSubset` with its images.
        splits: `datasets.ArraySplits`; its test images are measured.
        config: `PAWSConfig`; its `temperature` is τ.
    """
    data = dataclasses.replace(splits, labeled=labeled)
    return _soft_nearest_accuracy(model, data, config.temperature)


def _soft_nearest_accuracy(model, data, temperature):
    """PAWS-NN on a run's data, arrays or streams alike."""
    from keras_ssl.evaluation import SoftNearestNeighbour  # Keras.

    support, labels, queries, truth = data.embeddings(model, "projection")
    classifier = SoftNearestNeighbour(
        temperature=temperature, num_classes=data.num_classes
    )
    classifier.fit(support, labels)
    return classifier.evaluate(queries, truth)


def _paws_nn(run, model):
    temperature = run.config.temperature
    accuracy = _soft_nearest_accuracy(model, run.splits, temperature)
    return {"paws_nn_accuracy": accuracy}


def _fine_tuner(run):
    """Appendix C: fine-tune the encoder and the first head layer."""
    head = run.models["pretrainer"].head
    return stages.fine_tuner(run, head, ft_layer=run.config.ft_layer)


def _batch(run):
    return run.config.batch_size


STAGES = (
    # 0.4·B/256 (6.4 at B = 4096), cosine-decayed to 1% of the peak (the
    # reference's final rate: 0.064 on ImageNet, 0.032 on CIFAR).
    stages.pretrain_stage(
        _pretrainer, _stream, _batch, "linear", (_paws_nn,), end_fraction=0.01
    ),
    *stages.finetune_and_baseline(_fine_tuner),
)


fit = recipe_fit(PAWSConfig, STAGES, "pretrain → PAWS-NN → fine-tune")


def main(argv=None):
    return config_main(
        PAWSConfig, fit, "python -m keras_ssl.recipes.paws", argv
    )


if __name__ == "__main__":
    main(sys.argv[1:])
