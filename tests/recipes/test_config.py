"""Configs are checked when made; one command line serves every recipe."""

import subprocess
import sys

import pytest

from keras_ssl.recipes import paws
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.config import RESNET_DEPTHS
from keras_ssl.recipes.config import RESNET_STEMS
from keras_ssl.recipes.config import config_from_command_line


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"batch_size": -5}, "batch_size=-5"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"epochs": -1}, "epochs=-1"),
        ({"steps_per_epoch": -3}, "steps_per_epoch=-3"),
        ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"finetune_learning_rate": -1.0}, "finetune_learning_rate=-1.0"),
        ({"warmup_fraction": 1.5}, "warmup_fraction=1.5"),
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001"),
        ({"memory_momentum": 1.5}, "memory_momentum=1.5"),
        ({"memory_momentum": 1.0}, "memory_momentum=1.0"),
        ({"memory_size": -1}, "memory_size=-1"),
        ({"memory_views": 3}, "memory_views=3"),
        ({"depth": 17}, "depth=17"),
        ({"student_depth": 17}, "depth=17"),
        ({"stem": "foo"}, "stem='foo'"),
        ({"width_multiplier": 0}, "width_multiplier=0"),
        ({"sk_ratio": 1.0}, "sk_ratio=1.0"),
        ({"image_size": 0}, "image_size=0"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"distill_temperature": -1.0}, "distill_temperature=-1.0"),
        ({"distill_alpha": 1.5}, "distill_alpha=1.5"),
        ({"labeled_per_class": 0}, "labeled_per_class=0"),
        ({"labeled_per_class": None}, "exactly one of"),
        ({"labeled_fraction": 0.1}, "exactly one of"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"finetune_crop_scale": (0.0, 1.0)}, "finetune_crop_scale"),
        ({"learning_rate_scaling": "cubic"}, "learning_rate_scaling"),
        ({"export": "on"}, "export='on'"),
        ({"verbose": 5}, "verbose=5"),
        ({"dataset": "mnist"}, "dataset='mnist'"),
        ({"stages": ("pretrain", "linear")}, "linear"),
        ({"ft_layer": -1}, "ft_layer=-1"),
        ({"pretrain_steps": -1}, "pretrain_steps=-1"),
        ({"finetune_steps": 2.5}, "finetune_steps=2.5"),
        ({"distill_steps": -2}, "distill_steps=-2"),
        ({"precision": "float64"}, "precision='float64'"),
        ({"baselines": "no"}, "baselines='no'"),
        ({"linear_probe_first": 1}, "linear_probe_first=1"),
        ({"knn_monitor_every": -1}, "knn_monitor_every=-1"),
    ],
)
def test_simclrv2_config_is_checked_when_made(overrides, match):
    with pytest.raises(ValueError, match=match):
        simclrv2.SimCLRv2Config.digits(**overrides)


@pytest.mark.parametrize(
    "make, overrides, match",
    [
        (paws.PAWSConfig.digits, {"label_smoothing": 1.0}, "label_smoothing"),
        (paws.PAWSConfig.digits, {"images_per_class": 0}, "images_per"),
        (paws.PAWSConfig.digits, {"me_max": "yes"}, "me_max"),
        (semppl.SemPPLConfig.digits, {"momentum": 1.0}, "momentum=1.0"),
        (semppl.SemPPLConfig.digits, {"queue_multiplier": 0}, "queue_mult"),
        (semppl.SemPPLConfig.digits, {"k": 0}, "k=0"),
    ],
)
def test_every_recipe_checks_its_own_fields(make, overrides, match):
    with pytest.raises(ValueError, match=match):
        make(**overrides)


def test_presets_are_valid():
    for cls in (
        simclrv2.SimCLRv2Config,
        paws.PAWSConfig,
        semppl.SemPPLConfig,
    ):
        for preset in ("digits", "cifar10", "cifar10_cpu", "imagenet"):
            getattr(cls, preset)()


def test_depths_and_stems_match_the_backbone():
    from keras_ssl.backbones import resnet

    assert RESNET_DEPTHS == tuple(resnet.STAGE_BLOCKS)
    assert RESNET_STEMS == resnet.STEMS


def _parse(*argv):
    return config_from_command_line(simclrv2.SimCLRv2Config, "prog", argv)


@pytest.mark.parametrize(
    "text, value",
    [(t, True) for t in ("true", "Yes", "1", "on", "ON")]
    + [(t, False) for t in ("false", "no", "0", "off", "Off")],
)
def test_command_line_booleans(text, value):
    assert _parse("--export", text).export is value


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--export", "maybe"), "--export: expected one of"),
        (("--batch_size", "-5"), "batch_size=-5"),
        (("--memory_momentum", "1.5"), "memory_momentum=1.5"),
        (("--depth", "17"), "depth=17"),
        (("--stem", "foo"), "stem='foo'"),
        (("--labeled_per_class", "none"), "exactly one of"),
        (("--epochs", "three"), "invalid int value"),
        (("--stages", "linear"), "invalid choice"),
    ],
)
def test_command_line_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert message in capsys.readouterr().err


def test_command_line_label_settings_replace_each_other():
    config = _parse("--labeled_per_class", "none", "--labeled_fraction", "0.1")
    assert (config.labeled_per_class, config.labeled_fraction) == (None, 0.1)
    config = _parse("--labeled_fraction", "0.2")
    assert (config.labeled_per_class, config.labeled_fraction) == (None, 0.2)
    config = _parse("--preset", "imagenet", "--labeled_per_class", "13")
    assert (config.labeled_per_class, config.labeled_fraction) == (13, None)


@pytest.mark.parametrize(
    "config_cls",
    [simclrv2.SimCLRv2Config, paws.PAWSConfig, semppl.SemPPLConfig],
)
def test_command_line_has_a_flag_per_stage_budget(config_cls):
    budgets = [f"{name}_steps" for name in config_cls.STAGE_NAMES]
    argv = []
    for i, name in enumerate(budgets):
        argv += [f"--{name}", str(i + 3)]
    argv += ["--precision", "bfloat16", "--baselines", "false"]
    config = config_from_command_line(config_cls, "prog", argv)
    assert [getattr(config, n) for n in budgets] == [3, 4, 5][: len(budgets)]
    assert config.precision == "bfloat16" and config.baselines is False


def test_command_line_keeps_preset_values_not_given():
    config = _parse("--preset", "cifar10", "--epochs", "3")
    assert config == simclrv2.SimCLRv2Config.cifar10(epochs=3)


@pytest.mark.parametrize("recipe", ["simclrv2", "paws", "semppl"])
def test_help_is_documented_and_imports_no_tensorflow(recipe):
    # Fast because it imports no TensorFlow: that is what is checked, not
    # a time, which a loaded machine would make fail at random.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['x', '--help']\n"
        "try:\n"
        f"    runpy.run_module('keras_ssl.recipes.{recipe}', "
        "run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    ).stdout
    assert output.strip().endswith("NO-TF")
    assert "--batch_size" in output
    assert "Global batch of unlabeled images" in output
    assert "Default: digits 128, cifar10" in output
    assert "--overwrite BOOL" in output
