"""Each recipe's `imagenet()` preset on a streamed image folder, through
`fit()` and the runner, with the network and batches shrunk: the streams
feed every stage, the subset comes from `1percent.txt` by file name, and
the evaluations run on the streamed validation split."""

import json
import os

import pytest
import tensorflow as tf

from keras_ssl.recipes import paws
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes import strategy
from keras_ssl.recipes.config import config_from_command_line

pytestmark = pytest.mark.slow

# The presets' ResNet-50 at 224 px, shrunk: what runs is the data path.
SHRUNK = dict(
    image_size=32,
    depth=18,
    width_multiplier=0.125,
    pretrain_steps=2,
    finetune_steps=2,
    verbose=0,
    export=False,
    # The from-scratch baseline repeats fine-tuning's path.
    baselines=False,
)


def _check_report(result, output_dir, names):
    metrics = {
        k: v for s in result.stages.values() for k, v in s.metrics.items()
    }
    for name in names:
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
    report = json.loads((output_dir / "report.json").read_text())
    assert report["labeled_images"] == 12
    assert report["test_images"] == 16
    # No pixel baselines: the images are not in memory.
    assert not [r for r in report["rows"] if r["stage"] is None]


def test_simclrv2_imagenet_preset_streams_every_stage(folder, tmp_path):
    config = simclrv2.SimCLRv2Config.imagenet(
        dataset="folder",
        data_dir=folder,
        labels="1pct",
        batch_size=8,
        labeled_batch_size=4,
        memory_size=64,
        finetune_batch_size=4,
        distill_steps=2,
        output_dir=str(tmp_path),
        **SHRUNK,
    )
    result = simclrv2.fit(config)
    assert set(result.stages) >= {"pretrain", "finetune", "distill"}
    _check_report(
        result,
        tmp_path,
        ("knn_accuracy", "knn_top5_accuracy", "test_accuracy"),
    )
    assert (
        result.stages["finetune"].metrics["test_top5_accuracy"]
        >= (result.stages["finetune"].metrics["test_accuracy"])
    )


@pytest.mark.parametrize(
    "recipe, config_cls, extra, metric",
    [
        (
            paws,
            paws.PAWSConfig,
            dict(classes_per_batch=4, images_per_class=2, projection_dim=32),
            "paws_nn_accuracy",
        ),
        (
            semppl,
            semppl.SemPPLConfig,
            dict(labeled_batch_size=4),
            "semppl_nn_accuracy",
        ),
    ],
    ids=["paws", "semppl"],
)
def test_imagenet_preset_streams(
    recipe, config_cls, extra, metric, folder, tmp_path
):
    config = config_cls.imagenet(
        dataset="folder",
        data_dir=folder,
        labels="1pct",
        batch_size=8,
        finetune_epochs=1,
        output_dir=str(tmp_path),
        **extra,
        **SHRUNK,
    )
    result = recipe.fit(config)
    assert "finetune" in result.stages
    _check_report(result, tmp_path, (metric, "knn_accuracy", "test_accuracy"))


def test_streamed_data_sets_on_the_command_line(folder):
    config = config_from_command_line(
        simclrv2.SimCLRv2Config,
        "simclrv2",
        ["--preset", "imagenet", "--dataset", "folder", "--data_dir", folder]
        + ["--labels", "10pct", "--strategy", "mirrored"],
    )
    assert (config.dataset, config.labels) == ("folder", "10pct")
    assert config.strategy == "mirrored"
    assert isinstance(
        strategy.make_strategy(config.strategy), tf.distribute.MirroredStrategy
    )
    assert strategy.make_strategy("default") is None
    with pytest.raises(ValueError, match="strategy"):
        simclrv2.SimCLRv2Config.digits(strategy="gpus")
    with pytest.raises(ValueError, match="labels"):
        simclrv2.SimCLRv2Config.digits(labels="1pct")
    # A missing subset file is named before anything trains.
    with pytest.raises(ValueError, match="10percent.txt"):
        simclrv2.fit(config, output_dir=os.path.join(folder, "unused"))
