"""SimCLRv2 end to end: pretrain, fine-tune, distill, export.

Run the default (scikit-learn's digits, no download) from a shell:

```
python -m keras_ssl.recipes.simclrv2
python -m keras_ssl.recipes.simclrv2 --preset cifar10 --data_dir DIR
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
from keras_ssl.recipes.config import check
from keras_ssl.recipes.config import check_choice
from keras_ssl.recipes.config import main as config_main
from keras_ssl.recipes.config import preset
from keras_ssl.recipes.recipe_fit import recipe_fit
from keras_ssl.recipes.runner import Stage


@dataclass
class SimCLRv2Config(RecipeConfig):
    """SimCLRv2's settings; the defaults are the paper's ImageNet ones.

    SimCLRv2 §3.1: batch 4096, 800 epochs, LARS at 0.1·√B warmed up over
    5% of the epochs then cosine-decayed, weight decay 1e-4, a 3-layer
    head, a 64K memory with EMA 0.999; fine-tuning from the first head
    layer at 0.005·√B (0.002·√B for wide or SK ResNets), batch 1024, 60
    epochs; distillation for 400 epochs at temperature 0.1 (Appendix F,
    for a fine-tuned teacher). Presets: `imagenet()`,
    `cifar10()` and `digits()` (small, no download).

    Attributes:
        finetune_learning_rate: float or `None`. Fine-tuning's base LARS
            rate; `None` picks §3.1's rate for the ResNet.
        head_layers: int. Layers of the projection head.
        projection_dim: int. Output size of the projection head.
        labeled_batch_size: int. Labeled images added to each pretraining
            batch for the online linear probe (0: none).
        learning_rate_scaling: str. `"sqrt"` or `"linear"` in the batch.
        memory_size: int. Entries of the MoCo memory (0: no memory).
        memory_momentum: float. EMA of the memory network, in [0, 1).
        memory_views: int. Views of each image queued (1 or 2).
        ft_layer: int. Head layers kept for fine-tuning.
        finetune_batch_size: int. Fine-tuning batch.
        distill_epochs: int. Distillation epochs (passes over all
            training images, labeled and unlabeled).
        distill_steps: int or `None`. Distillation's total steps, instead
            of `distill_epochs`.
        distill_temperature: float. Temperature of distillation.
        distill_alpha: float. Weight of the distillation term in [0, 1];
            below 1 the labeled cross-entropy joins it.
        student_depth: int or `None`. Student's ResNet depth (`None`:
            the teacher's).
        student_width_multiplier: float or `None`. Student's width.
    """

    STAGE_NAMES = ("pretrain", "finetune", "distill")

    # `RecipeConfig` fields with other defaults.
    labeled_fraction: float | None = 0.01
    epochs: int = 800
    learning_rate: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 1e-4
    finetune_epochs: int = 60
    finetune_learning_rate: float | None = None
    stages: tuple = ("pretrain", "finetune", "distill")
    output_dir: str = "runs/simclrv2"
    # Head.
    head_layers: int = 3
    projection_dim: int = 128
    # Pretraining.
    labeled_batch_size: int = 0
    learning_rate_scaling: str = "sqrt"
    memory_size: int = 65536
    memory_momentum: float = 0.999
    memory_views: int = 2
    # Fine-tuning.
    ft_layer: int = 1
    finetune_batch_size: int = 1024
    # Distillation.
    distill_epochs: int = 400
    distill_steps: int | None = None
    # Appendix F: 0.1 when the teacher is fine-tuned, as it is here.
    distill_temperature: float = 0.1
    distill_alpha: float = 1.0
    student_depth: int | None = None
    student_width_multiplier: float | None = None

    @preset
    def imagenet(cls):
        """The paper's ImageNet setting (1% labels; 128 TPU v3 cores)."""
        return cls()

    @preset
    def cifar10(cls):
        """CIFAR-10 with 4,000 labels (400 per class).

        Command: `python recipes/simclrv2_cifar10.py --data_dir DIR`.
        A CIFAR-stem ResNet-18 at batch 512, learning rate 1.0·B/256 and
        weight decay 1e-6 (SimCLR's CIFAR setting), colour strength 0.5
        without blur, temperature 0.5.
        """
        return cls(
            **CIFAR10,
            views="simclr_cifar",
            batch_size=512,
            labeled_batch_size=64,
            epochs=100,
            learning_rate=1.0,
            learning_rate_scaling="linear",
            weight_decay=1e-6,
            temperature=0.5,
            memory_size=4096,
            finetune_batch_size=256,
            finetune_epochs=30,
            distill_epochs=30,
            distill_temperature=1.0,
            output_dir="runs/simclrv2_cifar10",
        )

    @preset
    def cifar10_cpu(cls):
        """CIFAR-10 with 250 labels (25 per class) in under half an hour
        on two CPU cores.

        What it trades for that: a CIFAR-stem ResNet-18 at a quarter of
        the width, 1,000 pretraining steps of batch 256 (5 epochs) at
        the digits' rate, no MoCo memory (see `digits()`; MoCo's own
        queue costs more than ours in 200-step runs at this rate:
        docs/parity.md, "SimCLRv2's memory (MoCo)"), LP-FT from the
        encoder's output on crops of at least 80% of the image, and no
        distillation, which would cost as much as the pretraining
        (docs/benchmarks.md).
        """
        return cls.cifar10(
            **CIFAR10_CPU,
            batch_size=256,
            labeled_batch_size=0,
            memory_size=0,
            pretrain_steps=1000,
            ft_layer=0,
            stages=("pretrain", "finetune"),
            output_dir="runs/simclrv2_cifar10_cpu",
        )

    @preset
    def digits(cls):
        """scikit-learn's 8×8 digits at 16 px, 10 labels per class.

        A few minutes on a laptop CPU, no download. Crops keep at least
        30% of the image (at 16 px, 8% crops of the two views share
        nothing); the learning rates are far above the paper's, which are
        meant for 100k-step runs. No MoCo memory: at these rates the
        network changes so much per step that even fresh keys come from
        another function, and they hurt more than they help (measured in
        docs/benchmarks.md). MoCo's own momentum encoder and queue
        (facebookresearch/moco), which ours matches step for step, cost
        k-NN accuracy too in 200-step runs at this rate, more than ours
        (docs/parity.md, "SimCLRv2's memory (MoCo)"). Fine-tuning is
        LP-FT from the encoder's output at §3.1's 0.005·√B on crops of
        at least 80% of the image: on a validation split of the training
        images, the head's first layer, higher rates and smaller crops
        each did worse (docs/benchmarks.md). Distillation runs 30 epochs
        (330 steps) at temperature 1: at 10 epochs the student ends below
        its teacher with SimCLR's own distillation step too, at 30 it
        reaches it on both sides (docs/parity.md, "SimCLRv2's
        distillation: the reference's own step").
        """
        return cls.cifar10(
            **DIGITS,
            crop_scale=(0.3, 1.0),
            labeled_batch_size=32,
            epochs=30,
            memory_size=0,
            ft_layer=0,
            finetune_batch_size=50,
            distill_epochs=30,
            output_dir="runs/simclrv2_digits",
        )

    def checks(self):
        return super().checks() + (
            ("head_layers", "int>=1"),
            ("projection_dim", "int>=1"),
            ("labeled_batch_size", "int>=0"),
            ("memory_size", "int>=0"),
            ("memory_momentum", "[0,1)"),
            ("finetune_batch_size", "int>=1"),
            ("distill_epochs", "int>=0"),
            ("distill_steps", "int>=0|None"),
            ("distill_temperature", ">0"),
            ("distill_alpha", "[0,1]"),
            ("student_width_multiplier", ">0|None"),
        )

    def validate(self):
        super().validate()
        check_choice("memory_views", self.memory_views, (1, 2))
        check_choice(
            "learning_rate_scaling",
            self.learning_rate_scaling,
            ("linear", "sqrt"),
        )
        check("ft_layer", self.ft_layer, "int>=0")
        if self.ft_layer > self.head_layers:
            raise ValueError(
                f"`ft_layer` must be between 0 and head_layers="
                f"{self.head_layers}. Received: ft_layer={self.ft_layer}"
            )
        if self.distill_alpha < 1.0 and not self.labeled_batch_size:
            # The distiller would train on unlabeled batches only and fail
            # there, after pretraining and fine-tuning.
            raise ValueError(
                "`distill_alpha` < 1 weights the labeled term of "
                "distillation, which needs `labeled_batch_size` > 0. "
                f"Received: distill_alpha={self.distill_alpha}, "
                f"labeled_batch_size={self.labeled_batch_size}"
            )
        if self.student_depth is not None:
            RecipeConfig.validate(
                dataclasses.replace(self, depth=self.student_depth)
            )

    def global_batch_sizes(self):
        return {
            "batch_size": self.batch_size,
            "finetune_batch_size": self.finetune_batch_size,
        }


def _finetune_learning_rate(run):
    config = run.config
    if config.finetune_learning_rate is not None:
        return config.finetune_learning_rate
    # §3.1: 0.005·√B for standard ResNets, 0.002·√B for wider or SK ones.
    wide = config.width_multiplier > 1 or config.sk_ratio > 0
    return 0.002 if wide else 0.005


def _pretrainer(run):
    # Keras: loaded when the stage is built, not with the command line.
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.models import SimCLRv2Pretrainer

    config = run.config
    head = ProjectionHead(
        num_layers=config.head_layers,
        output_dim=config.projection_dim,
        synchronized_bn=run.sync,
    )
    return SimCLRv2Pretrainer(
        stages.encoder(run),
        head=head,
        views=stages.views(run),
        temperature=config.temperature,
        memory_size=config.memory_size,
        momentum=config.memory_momentum,
        memory_views=config.memory_views,
        num_classes=(
            run.splits.num_classes if config.labeled_batch_size else None
        ),
    )


def _pretrain_labels(config):
    return config.labeled_batch_size > 0


def _distill_labels(config):
    return config.distill_alpha < 1.0 and config.labeled_batch_size > 0


def _unlabeled_stream(seed_offset, with_labels):
    """The pretraining (and distillation) stream: all training images,
    with `labeled_batch_size` labeled ones when `with_labels(config)`."""

    def stream(run):
        config = run.config
        labels = with_labels(config)
        return run.splits.pretrain_stream(
            config.batch_size,
            config.labeled_batch_size if labels else 0,
            # The memory keeps each image's own earlier keys out of its
            # negatives by these ids.
            image_ids=True,
            seed_offset=seed_offset,
        )

    return stream


def _teacher(run):
    pretrainer = run.models["pretrainer"]
    return stages.fine_tuner(run, pretrainer.head, run.config.ft_layer)


def _distiller(run):
    # Keras: loaded when the stage is built, not with the command line.
    from keras_ssl.models import Distiller
    from keras_ssl.models import FineTuner

    config = run.config
    student = FineTuner(
        stages.encoder(
            run,
            depth=config.student_depth,
            width=config.student_width_multiplier,
        ),
        num_classes=run.splits.num_classes,
        ft_layer=0,
        seed=config.seed,
    )
    return Distiller(
        run.models["teacher"],
        student,
        temperature=run.config.distill_temperature,
        alpha=run.config.distill_alpha,
    )


def _distilled_student(run, model):
    run.models["student"] = model.student
    return stages.test_accuracy(run, model.student)


def _batch(run):
    return run.config.batch_size


def _scaling(config):
    return config.learning_rate_scaling


def _finetune_batch(run):
    return run.config.finetune_batch_size


STAGES = (
    stages.pretrain_stage(
        _pretrainer,
        _unlabeled_stream(0, _pretrain_labels),
        _batch,
        _scaling,
        (stages.last_epoch("contrastive_accuracy", "probe_accuracy"),),
        labels=_pretrain_labels,
    ),
    stages.classifier_stage(
        "finetune",
        _teacher,
        learning_rate=_finetune_learning_rate,
        batch=_finetune_batch,
        start="pretrain",
        init=stages.linear_head_first,
        finish=stages.interpolate_with_start,
        role="teacher",
        title="fine-tuned (teacher)",
        exports="teacher",
    ),
    Stage(
        "distill",
        build=_distiller,
        data=_unlabeled_stream(1, _distill_labels),
        optimizer=stages.pretrain_optimizer(_batch, _scaling),
        epochs="distill_epochs",
        batch=_batch,
        examples=stages.train_images,
        steps="distill_steps",
        start="finetune",
        report=(_distilled_student,),
        role="distiller",
        title="distilled (student)",
        exports="student",
        labels=_distill_labels,
    ),
    stages.baseline_stage(_finetune_learning_rate, _finetune_batch),
)


fit = recipe_fit(SimCLRv2Config, STAGES, "pretrain → fine-tune → distill")


def main(argv=None):
    return config_main(
        SimCLRv2Config, fit, "python -m keras_ssl.recipes.simclrv2", argv
    )


if __name__ == "__main__":
    main(sys.argv[1:])
