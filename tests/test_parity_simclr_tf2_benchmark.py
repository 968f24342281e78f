"""`benchmarks/parity_simclr_tf2.py`'s checks of its input, without the
reference."""

import os
import time

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_simclr_tf2")


def _checkout(path, files):
    (path / "tf2").mkdir()
    for name in files:
        (path / "tf2" / name).write_text("")
    return str(path)


def test_a_checkout_without_a_file_it_imports_is_named(script, tmp_path):
    checkout = _checkout(tmp_path, ("model.py", "resnet.py", "objective.py"))
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        script.main(["--simclr-dir", checkout])
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    for name in ("lars_optimizer.py", "metrics.py", "data_util.py"):
        assert name in message
    assert "resnet.py" not in message.split("lacks")[1]
    with pytest.raises(ValueError, match="--simclr-dir"):
        script.main([])


def test_a_reference_python_without_tf_keras_is_named(
    script, tmp_path, monkeypatch, python_without_site_packages
):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    python = python_without_site_packages
    empty = tmp_path / "site"
    empty.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(empty))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"`tf_keras`.*--reference-python"):
        script.main(["--simclr-dir", checkout, "--reference-python", python])
    assert time.perf_counter() - start < 1.0
    # The same interpreter finds the package on its PYTHONPATH.
    (empty / "tf_keras").mkdir()
    (empty / "tf_keras" / "__init__.py").write_text("")
    script.check_reference_python(python)


def test_a_reference_python_that_does_not_run_is_named(script, tmp_path):
    missing = str(tmp_path / "no_python")
    with pytest.raises(ValueError, match="no_python"):
        script.check_reference_python(missing)


def test_arguments_of_a_checkout(script, tmp_path):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(
        ["--simclr-dir", checkout, "--steps", "5", "--compare-at", "2"]
    )
    assert args.simclr_tf2 == os.path.join(checkout, "tf2")
    assert args.compare == [2, 5]
    assert args.cases == list(script.CASES)


@pytest.mark.parametrize(
    "argv",
    [
        ["--cases", "pretrain-r3-linear"],
        ["--batch", "15"],
        ["--steps", "3", "--compare-at", "4"],
        ["--compare-at", "x"],
    ],
)
def test_bad_arguments(script, tmp_path, argv):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError):
        script.parse_args(["--simclr-dir", checkout, *argv])


def test_case_settings_follow_the_reference_schedule(script, tmp_path):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(
        ["--simclr-dir", checkout, "--examples", "100", "--batch", "16"]
    )
    pretrain = script.case_settings(args, "pretrain-r2-sqrt")
    assert (pretrain["replicas"], pretrain["scaling"]) == (2, "sqrt")
    # model.py: int(round(warmup_epochs * num_examples // batch)).
    assert pretrain["warmup_steps"] == 100 // 16
    assert pretrain["flags"]["lineareval_while_pretraining"] is True
    finetune = script.case_settings(args, "finetune-ft1")
    assert finetune["ft_layer"] == finetune["flags"]["ft_proj_selector"] == 1
    assert finetune["warmup_steps"] == 0
    assert finetune["flags"]["zero_init_logits_layer"] is True


def test_difference_is_relative_to_the_reference_tensor(script):
    theirs = np.array([[2.0, -4.0], [0.0, 1.0]])
    ours = theirs + np.array([[0.0, 0.0], [0.002, 0.0]])
    assert script._difference(ours, theirs) == pytest.approx(0.0005)
    assert script._difference(np.zeros(3), np.zeros(3)) == 0.0
    assert script._difference(np.ones(3), np.zeros(3)) == float("inf")
    with pytest.raises(ValueError, match="Shapes differ"):
        script._difference(np.ones(3), np.ones(4))


def test_the_table_keeps_each_group_s_largest_difference(script):
    rows = {
        1: [["a", "a/x", 1e-7], ["a", "a/y", 3e-7], ["b", "b/x", 0.0]],
        20: [["a", "a/x", 2e-4], ["a", "a/y", 1e-5], ["b", "b/x", 1e-6]],
    }
    assert script.grouped(rows) == {
        "a": {1: 3e-7, 20: 2e-4},
        "b": {1: 0.0, 20: 1e-6},
    }
    table = script.markdown(rows).splitlines()
    assert table[0] == "| weights | after 1 step | after 20 steps |"
    assert table[2] == "| a | 3.0e-07 | 2.0e-04 |"


# === Short runs ===


def _data_dir(path, train=60, test=20):
    rng = np.random.default_rng(0)
    for name, count in (("train", train), ("test", test)):
        np.savez(
            path / f"{name}.npz",
            x=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
            y=np.arange(count) % 10,
        )
    return str(path)


def _short_argv(tmp_path, *extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return [
        "--short-runs",
        "--data-dir",
        _data_dir(data),
        "--images",
        "40",
        "--batch",
        "8",
        *extra,
    ]


def test_short_run_arguments(script, tmp_path):
    checkout = tmp_path / "simclr"
    checkout.mkdir()
    argv = _short_argv(tmp_path, "--simclr-dir", _checkout(checkout, []))
    with pytest.raises(ValueError, match="--simclr-dir"):
        script.parse_args(argv)
    args = script.parse_args([*argv, "--sides", "ours", "--seeds", "3,4"])
    assert args.width == 0.25
    assert args.seed_list == [3, 4]
    assert args.side_list == ["ours"]


@pytest.mark.parametrize(
    "extra, name",
    [
        (["--seeds", "a,b"], "--seeds"),
        (["--seeds", ""], "--seeds"),
        (["--sides", "ours,theirs"], "--sides"),
        (["--image-size", "24"], "--image-size"),
        (["--width", "0.3"], "--width"),
        (["--width", "0"], "--width"),
        (["--window", "30", "--steps", "20"], "--window"),
        (["--images", "4"], "--images"),
        (["--warmup-fraction", "1.5"], "--warmup-fraction"),
    ],
)
def test_bad_short_run_arguments(script, tmp_path, extra, name):
    argv = _short_argv(tmp_path, "--sides", "ours", *extra)
    with pytest.raises(ValueError, match=name):
        script.parse_args(argv)


def test_short_runs_need_cifar_arrays(script, tmp_path):
    with pytest.raises(ValueError, match="--data-dir.*train.npz"):
        script.parse_args(["--short-runs", "--sides", "ours"])
    with pytest.raises(ValueError, match="--data-dir"):
        script.parse_args(
            ["--short-runs", "--sides", "ours", "--data-dir", str(tmp_path)]
        )


def test_width_is_for_short_runs_only(script, tmp_path):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError, match="--width"):
        script.parse_args(["--simclr-dir", checkout, "--width", "0.5"])


@pytest.mark.parametrize(
    "batch, steps, images", [(64, 200, 4000), (128, 200, 4000), (48, 150, 3000)]
)
def test_the_reference_warms_up_as_many_steps_as_ours(
    script, tmp_path, batch, steps, images
):
    argv = _short_argv(tmp_path, "--sides", "ours")
    args = script.parse_args(argv)
    args.batch, args.steps, args.images = batch, steps, images
    settings = script.run_settings(args)
    assert settings["warmup_steps"] == round(0.1 * steps)
    # model.py's WarmUpAndCosineDecay.
    epochs = settings["flags"]["warmup_epochs"]
    assert int(round(epochs * images // batch)) == settings["warmup_steps"]
    assert settings["flags"]["train_steps"] == steps
    assert settings["flags"]["lineareval_while_pretraining"] is True
    assert settings["flags"]["learning_rate_scaling"] == "linear"


def test_both_sides_of_a_seed_draw_the_same_images(script):
    first = script.step_indices(50, 8, 6, seed=1)
    assert first.shape == (6, 8)
    assert all(len(set(row)) == 8 for row in first)
    assert first.min() >= 0 and first.max() < 50
    np.testing.assert_array_equal(first, script.step_indices(50, 8, 6, 1))
    assert not np.array_equal(first, script.step_indices(50, 8, 6, 2))


def test_loss_windows_and_spread(script):
    assert script.loss_windows([1.0, 3.0, 5.0, 7.0, 9.0], 2) == [2.0, 6.0, 9.0]
    assert script.mean_std([1.0, 3.0]) == (2.0, 1.0)


def test_images_are_averaged_down_and_shuffled_alike(script, tmp_path):
    argv = _short_argv(tmp_path, "--sides", "ours", "--image-size", "16")
    args = script.parse_args(argv)
    small = script.load_images(args)
    assert small["x"].shape == (40, 16, 16, 3)
    assert small["test_x"].shape == (20, 16, 16, 3)
    args.image_size = 32
    full = script.load_images(args)
    np.testing.assert_array_equal(full["y"], small["y"])
    block = full["x"][0, :2, :2].astype(float).mean(axis=(0, 1))
    np.testing.assert_array_equal(small["x"][0, 0, 0], np.round(block))
    image = np.array([[[0], [1]], [[2], [4]]], np.uint8)[None]
    assert script.downsample(image)[0, 0, 0, 0] == 2  # round(1.75)


def test_the_summary_gives_mean_and_spread_per_side(script, tmp_path):
    args = script.parse_args(
        _short_argv(tmp_path, "--sides", "ours", "--steps", "4")
    )
    args.window = 2
    results = [
        {
            "side": "ours",
            "loss": [4.0, 4.0, 3.0, 3.0 + 2 * seed],
            "probe_accuracy": [0.1, 0.1, 0.2, 0.4],
            "knn_start": 0.1,
            "knn": 0.2 + 0.1 * seed,
            "step_seconds": 1.0,
        }
        for seed in (0, 1)
    ]
    table = script.summarize(args, results).splitlines()
    assert "steps 1–2, 3–4" in table[0]
    assert table[2] == (
        "| ours | 2 | 4.000 ± 0.000, 3.500 ± 0.500 | 30.0% ± 0.0% | "
        "10.0% ± 0.0% | 25.0% ± 5.0% | 1.00 |"
    )
