"""`benchmarks/parity_simclr_finetune_runs.py`'s checks of its input, its
settings and its table, without the reference."""

import json
import time
import types

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_simclr_finetune_runs")


def _checkout(path, files):
    (path / "tf2").mkdir()
    for name in files:
        (path / "tf2" / name).write_text("")
    return str(path)


def test_a_checkout_without_a_file_it_imports_is_named(script, tmp_path):
    checkout = _checkout(tmp_path, ("model.py", "resnet.py", "objective.py"))
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        script.main(["--simclr-dir", checkout, "--out", str(tmp_path)])
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    for name in ("lars_optimizer.py", "metrics.py", "data_util.py"):
        assert name in message
    assert "resnet.py" not in message.split("lacks")[1]
    with pytest.raises(ValueError, match="--simclr-dir"):
        script.main([])


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--seeds", "x"], "seeds"),
        (["--seeds", "-1"], "seeds"),
        (["--rows", "reference-linear,probe"], "rows"),
        (["--pretrain-steps", "0"], "pretrain-steps"),
        (["--finetune-steps", "0"], "finetune-steps"),
    ],
)
def test_bad_arguments_are_named(script, tmp_path, argv, name):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError, match=name):
        script.parse_args(["--simclr-dir", checkout, *argv])


def test_the_budgets_and_flags_are_the_digits_preset_s(script, tmp_path):
    from keras_ssl.recipes.simclrv2 import SimCLRv2Config

    config = SimCLRv2Config.digits()
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(["--simclr-dir", checkout])
    settings = script.preset(args, 1438, 100)
    steps = settings["pretrain_steps"]
    assert steps == config.epochs * (1438 // config.batch_size)
    # model.py's warm-up rule gives the recipe's warm-up steps.
    flags = settings["pretrain_flags"]
    theirs = int(round(flags["warmup_epochs"] * 1438 // config.batch_size))
    assert theirs == int(round(config.warmup_fraction * steps))
    assert theirs == settings["warmup_steps"]
    assert flags["learning_rate"] == config.learning_rate
    assert flags["learning_rate_scaling"] == config.learning_rate_scaling
    assert flags["width_multiplier"] == config.width_multiplier
    assert flags["lineareval_while_pretraining"] is False
    batch = config.finetune_batch_size
    assert settings["finetune_batch"] == batch
    assert settings["finetune_steps"] == config.finetune_epochs * (100 // batch)
    linear = script.reference_flags(settings, "reference-linear")
    assert (linear["fine_tune_after_block"], linear["optimizer"]) == (
        4,
        "momentum",
    )
    whole = script.reference_flags(settings, "reference-finetune")
    assert (whole["fine_tune_after_block"], whole["optimizer"]) == (-1, "lars")
    assert whole["learning_rate"] == config.finetune_learning_rate
    assert whole["learning_rate_scaling"] == "sqrt"
    assert whole["ft_proj_selector"] == config.ft_layer
    for row in (linear, whole):
        assert row["zero_init_logits_layer"] is True
        assert row["weight_decay"] == 0.0
        assert row["train_steps"] == settings["finetune_steps"]
    assert script.reference_flags(settings, "reference-finetune-crop") is whole
    assert script.reference_flags(settings, "reference-linear-crop") is linear
    # A quick check's budgets replace the preset's.
    args = script.parse_args(
        [
            "--simclr-dir",
            checkout,
            "--pretrain-steps",
            "3",
            "--finetune-steps",
            "4",
        ]
    )
    settings = script.preset(args, 1438, 100)
    assert (settings["pretrain_steps"], settings["finetune_steps"]) == (3, 4)


def test_the_crop_patch_gives_the_reference_the_area_range(script):
    calls = []

    def crop(image, bbox, **kwargs):
        calls.append(kwargs)
        return image

    data_util = types.SimpleNamespace(distorted_bounding_box_crop=crop)
    script._area_range(data_util, (0.3, 1.0))
    data_util.distorted_bounding_box_crop(
        "image", "bbox", area_range=(0.08, 1.0), max_attempts=100
    )
    assert calls == [{"area_range": (0.3, 1.0), "max_attempts": 100}]


def test_the_data_are_the_preset_s_split_and_labeled_images(script, tmp_path):
    from keras_ssl.recipes import runner
    from keras_ssl.recipes.simclrv2 import SimCLRv2Config

    args = types.SimpleNamespace(data_seed=0)
    path = str(tmp_path / "data.npz")
    script.write_data(args, path)
    data = script.load_data(path)
    splits, labeled = runner.load_data(SimCLRv2Config.digits())
    np.testing.assert_array_equal(data["x_test"], splits.x_test)
    np.testing.assert_array_equal(data["y_test"], splits.y_test)
    np.testing.assert_array_equal(data["labeled_x"], labeled.x)
    np.testing.assert_array_equal(data["labeled_y"], labeled.y)
    assert np.bincount(data["labeled_y"]).tolist() == [10] * 10


def test_a_finished_job_is_read_not_run(script, tmp_path):
    args = types.SimpleNamespace(out=str(tmp_path))
    path = tmp_path / "seed1" / "ours-finetune.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"test_accuracy": 0.5}))
    assert script.run_job(args, [], 1, "ours-finetune") == {
        "test_accuracy": 0.5
    }


def test_the_table_gives_mean_std_and_each_seed(script):
    results = {
        (0, "reference-linear"): {"test_accuracy": 0.9},
        (1, "reference-linear"): {"test_accuracy": 0.8},
        (0, "ours-recipe"): {"share": 0.0, "test_accuracy": 0.95},
    }
    lines = script.table(results, [0, 1]).splitlines()
    assert lines[0] == "| model | mean ± std | seed 0 | seed 1 |"
    assert lines[2] == (
        "| reference: linear evaluation | 85.0% ± 5.0% | 90.0% | 80.0% |"
    )
    # Rows some seed lacks are left out.
    assert len(lines) == 3
