"""The `imagenet()` presets against the papers, value by value.

Each row of `TABLE` is a quantity as the run would use it (learning rates
after batch scaling, warm-up in epochs, total batch per step, views by
size) with the paper's value and where the paper states it. The values
are read through the recipes' own stage declarations and optimizer
factories, so a preset that a stage scales again (the PAWS rate once
peaked at 102.4 instead of 6.4) fails here.

Sources: SimCLRv2 = Chen et al. 2020, "Big Self-Supervised Models are
Strong Semi-Supervised Learners"; PAWS = Assran et al. 2021; SemPPL =
Bošnjak et al. 2023; "simclr code" = google-research/simclr's `run.py`
flag defaults; "suncet" = facebookresearch/suncet's
`configs/paws/imgnt_train.yaml`.
"""

import collections
import types

import pytest

from keras_ssl.recipes import paws
from keras_ssl.recipes import runner
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2

IMAGENET_TRAIN = 1_281_167
LABELED = {0.01: 12_811, 0.1: 128_116}

TABLE = (
    # SimCLRv2 pretraining.
    (
        "simclrv2",
        "encoder",
        ("resnet", 50, 1, 0.0),
        "§3.1 / Table 1: ResNet-50 (1x)",
    ),
    ("simclrv2", "pretrain.peak_lr", 6.4, "§3.1: 6.4 = 0.1·√4096"),
    (
        "simclrv2",
        "pretrain.warmup_epochs",
        40.0,
        "§3.1: first 5% of 800 epochs",
    ),
    ("simclrv2", "pretrain.end_lr", 0.0, "§3.1: cosine decay"),
    ("simclrv2", "pretrain.weight_decay", 1e-4, "§3.1: weight decay 1e-4"),
    ("simclrv2", "pretrain.momentum", 0.9, "§3: LARS with momentum 0.9"),
    ("simclrv2", "pretrain.batch", 4096, "§3.1: batch size 4096"),
    ("simclrv2", "pretrain.epochs", 800, "§3.1: 800 epochs"),
    ("simclrv2", "temperature", 0.1, "simclr code: temperature 0.1"),
    ("simclrv2", "head_layers", 3, "§3.1: 3-layer MLP projection head"),
    ("simclrv2", "projection_dim", 128, "simclr code: proj_out_dim 128"),
    ("simclrv2", "views", (224, 224), "§3.1: SimCLR's augmentations, 2 views"),
    ("simclrv2", "memory_size", 65536, "§3.1: memory buffer 64K"),
    ("simclrv2", "memory_momentum", 0.999, "§3.1: EMA decay 0.999"),
    ("simclrv2", "labeled_fraction", 0.01, "§3: 1% (12,811 images)"),
    ("simclrv2", "finetune.peak_lr", 0.16, "§3.1: 0.16 = 0.005·√1024"),
    ("simclrv2", "finetune.warmup_epochs", 0.0, "§3.1: no warm-up"),
    ("simclrv2", "finetune.weight_decay", 0.0, "§3.1: no weight decay"),
    ("simclrv2", "finetune.batch", 1024, "§3.1: batch size 1024"),
    ("simclrv2", "finetune.epochs", 60, "§3.1: 60 epochs with 1% labels"),
    ("simclrv2", "ft_layer", 1, "§3.1: from the head's first layer"),
    ("simclrv2", "distill.peak_lr", 6.4, "§3.1: pretraining's schedule"),
    ("simclrv2", "distill.weight_decay", 1e-4, "§3.1: pretraining's decay"),
    ("simclrv2", "distill.batch", 4096, "§3.1: pretraining's batch"),
    ("simclrv2", "distill.epochs", 400, "§3.1: 400 epochs"),
    ("simclrv2", "distill_temperature", 0.1, "App. F: 0.1, fine-tuned teacher"),
    # PAWS pretraining.
    ("paws", "encoder", ("resnet", 50, 1, 0.0), "§5: ResNet-50"),
    ("paws", "pretrain.peak_lr", 6.4, "§5: warm-up to 6.4"),
    ("paws", "pretrain.warmup_epochs", 10.0, "§5: during the first 10 epochs"),
    ("paws", "pretrain.end_lr", 0.064, "suncet: final_lr 0.064"),
    ("paws", "pretrain.weight_decay", 1e-6, "§5: weight decay 1e-6"),
    ("paws", "pretrain.momentum", 0.9, "§5: LARS, momentum 0.9"),
    ("paws", "pretrain.batch", 4096, "§5: batch size 4096"),
    ("paws", "pretrain.epochs", 100, "§5 / Fig. 1: 100 epochs"),
    ("paws", "temperature", 0.1, "§5: τ = 0.1"),
    ("paws", "sharpen_temperature", 0.25, "§5: T = 0.25"),
    ("paws", "label_smoothing", 0.1, "§5: smoothing 0.1"),
    ("paws", "me_max", True, "§5 / Table 6: ME-MAX on"),
    ("paws", "support", (960, 7), "§5: 960 classes x 7 images"),
    ("paws", "head_layers", 3, "§5: 3-layer MLP projection head"),
    ("paws", "projection_dim", 2048, "suncet: output_dim 2048"),
    ("paws", "prediction_head", True, "§5: 2-layer MLP prediction head"),
    ("paws", "views", (224, 224) + (96,) * 6, "§5: 2 x 224 and 6 x 96 crops"),
    ("paws", "labeled_fraction", 0.1, "§5: 10% labels (Table 1)"),
    # SemPPL pretraining.
    ("semppl", "encoder", ("resnet", 50, 1, 0.0), "§3: ResNet-50"),
    ("semppl", "pretrain.peak_lr", 4.8, "App. D.1: 0.3 x 4096/256"),
    ("semppl", "pretrain.warmup_epochs", 10.0, "App. D.1: 10 epochs"),
    ("semppl", "pretrain.end_lr", 0.0, "App. D.1: cosine decay"),
    ("semppl", "pretrain.weight_decay", 1e-6, "App. D.1: 1e-6"),
    ("semppl", "pretrain.batch", 4096, "App. D.1: B = 4096"),
    ("semppl", "pretrain.epochs", 300, "§2.3: 300 epochs"),
    ("semppl", "temperature", 0.2, "App. D.1: τ = 0.2"),
    ("semppl", "queue_size", 81920, "App. D.1: C = 20B"),
    ("semppl", "momentum", 0.996, "App. D.1: EMA 0.996"),
    ("semppl", "k", 1, "App. D.1: k = 1"),
    ("semppl", "num_semantic_positives", 3, "App. D.1: 3 semantic positives"),
    ("semppl", "alpha", 0.2, "App. D.1: α = 1/5"),
    ("semppl", "invariance_scale", 5.0, "App. D.1: λ = 5"),
    ("semppl", "contrastive_scale", 0.3, "App. D.1: c = 0.3"),
    ("semppl", "views", (224,) * 4 + (96,) * 2, "App. D.1: 4 x 224, 2 x 96"),
    ("semppl", "labeled_fraction", 0.1, "App. D.1: 10% labels"),
)

RECIPES = {
    "simclrv2": (simclrv2, simclrv2.SimCLRv2Config),
    "paws": (paws, paws.PAWSConfig),
    "semppl": (semppl, semppl.SemPPLConfig),
}


def _run(config):
    labeled = types.SimpleNamespace(y=range(LABELED[config.labeled_fraction]))
    # Stands in for the data: stages read only its sizes.
    splits = types.SimpleNamespace(
        num_train=IMAGENET_TRAIN, num_labeled=len(labeled.y), num_classes=1000
    )
    return runner.Run(config, splits, labeled, sync=True, result=None)


def _stage_values(stage, run):
    """What a stage's optimizer does over the preset's epochs."""
    batch = stage.batch(run)
    steps_per_epoch = stage.examples(run) // batch
    epochs = getattr(run.config, stage.epochs)
    optimizer = stage.optimizer(run, steps_per_epoch * epochs)
    optimizer_config = optimizer.get_config()
    schedule = optimizer_config["learning_rate"]["config"]
    return {
        "peak_lr": schedule["base_learning_rate"],
        "warmup_epochs": schedule["warmup_steps"] / steps_per_epoch,
        "end_lr": schedule["end_learning_rate"],
        "weight_decay": optimizer_config["weight_decay"] or 0.0,
        "momentum": optimizer_config["momentum"],
        "batch": batch,
        "epochs": epochs,
    }


def _effective(name):
    from keras_ssl.layers import Views

    module, config_cls = RECIPES[name]
    config = config_cls.imagenet()
    run = _run(config)
    values = {}
    for stage in module.STAGES:
        if stage.when is None and stage.name not in config.stages:
            continue
        if not stage.runs(config):
            continue
        for key, value in _stage_values(stage, run).items():
            values[f"{stage.name}.{key}"] = value
    specs = Views.preset_specs(config.views, size=config.image_size)
    values["views"] = tuple(spec.size for spec in specs)
    values["encoder"] = (
        "resnet",
        config.depth,
        config.width_multiplier,
        config.sk_ratio,
    )
    if name == "paws":
        values["support"] = (config.classes_per_batch, config.images_per_class)
    if name == "semppl":
        # As `semppl._pretrainer` sizes the queue.
        total = config.batch_size + config.labeled_batch_size
        values["queue_size"] = config.queue_multiplier * total
    return values, config


@pytest.fixture(scope="module")
def effective():
    return {name: _effective(name) for name in RECIPES}


def test_every_recipe_has_rows():
    counts = collections.Counter(row[0] for row in TABLE)
    assert set(counts) == set(RECIPES)
    assert min(counts.values()) >= 15


@pytest.mark.parametrize(
    "recipe, quantity, paper, source",
    TABLE,
    ids=[f"{row[0]}-{row[1]}" for row in TABLE],
)
def test_preset_matches_paper(effective, recipe, quantity, paper, source):
    values, config = effective[recipe]
    if quantity in values:
        actual = values[quantity]
    else:
        actual = getattr(config, quantity)
    if isinstance(paper, float):
        assert actual == pytest.approx(paper, rel=1e-3), source
    else:
        assert actual == paper, source


def test_paws_rate_scales_with_the_batch(effective):
    """The paper's 6.4 belongs to batch 4096: half the batch, half the rate
    (linear scaling), never a second scaling of 6.4."""
    config = paws.PAWSConfig.imagenet(batch_size=2048)
    stage = paws.STAGES[0]
    values = _stage_values(stage, _run(config))
    assert values["peak_lr"] == pytest.approx(3.2)
