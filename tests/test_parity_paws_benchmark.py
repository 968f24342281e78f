"""`benchmarks/parity_paws.py` and `parity_paws_runs.py` without suncet."""

import math
import sys
import time

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_paws")


@pytest.fixture
def runs(load_benchmark):
    return load_benchmark("parity_paws_runs")


def checkout(path, files):
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("")
    return path


def test_suncet_dir_is_required(script):
    with pytest.raises(ValueError, match="--suncet-dir"):
        script.parse_args([])


def test_a_checkout_without_the_imported_files_names_them_at_once(
    script, tmp_path
):
    checkout(tmp_path, ["src/losses.py", "src/lars.py"])
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        script.main(["--suncet-dir", str(tmp_path)])
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    missing = set(script.REFERENCE_FILES) - {"src/losses.py", "src/lars.py"}
    assert all(name in message for name in missing)
    assert "src/losses.py" not in message


def test_arguments_of_a_checkout(script, tmp_path):
    checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(
        ["--suncet-dir", str(tmp_path), "--compare", "20,1,5"]
    )
    assert args.suncet_root == str(tmp_path)
    assert args.compare == [1, 5, 20]
    assert args.offset == 2  # 6 · 0.8 / (3.2 - 0.8)


def test_a_reference_environment_without_a_package_names_it(script):
    package = "keras_ssl_absent_package"
    with pytest.raises(ValueError, match=f"lacks {package}") as error:
        script.check_reference_python(sys.executable, packages=(package,))
    assert "pip install" in str(error.value)
    # The packages that are there pass.
    script.check_reference_python(sys.executable, packages=("numpy",))


def test_a_reference_interpreter_that_does_not_run_is_named(script, tmp_path):
    python = str(tmp_path / "no_python")
    with pytest.raises(ValueError, match="--reference-python"):
        script.check_reference_python(python)


def _suncet_rate(step, start, peak, final, warmup, total):
    # src/utils.py WarmupCosineSchedule, from its formula.
    if step < warmup:
        return start + step / max(1, warmup) * (peak - start)
    progress = (step - warmup) / max(1, total - warmup)
    return max(
        final, final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def test_our_schedule_started_at_the_offset_is_the_reference_schedule(
    script, tmp_path
):
    from keras_ssl.optimizers import WarmupCosineDecay

    checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(["--suncet-dir", str(tmp_path)])
    schedule = WarmupCosineDecay(
        args.ref_lr,
        total_steps=args.total_steps + args.offset,
        warmup_steps=args.warmup + args.offset,
        end_learning_rate=args.final_lr,
    )
    ours = [float(schedule(k + args.offset)) for k in range(args.total_steps)]
    theirs = [
        _suncet_rate(
            k,
            args.start_lr,
            args.ref_lr,
            args.final_lr,
            args.warmup,
            args.total_steps,
        )
        for k in range(args.total_steps)
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert theirs[0] == args.start_lr > 0


def test_a_start_rate_our_schedule_cannot_match_is_rejected(script, tmp_path):
    checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError, match="must be whole"):
        script.parse_args(["--suncet-dir", str(tmp_path), "--start-lr", "1.0"])


@pytest.mark.parametrize(
    "argv", [["--batch", "1"], ["--compare", "40"], ["--compare", "a"]]
)
def test_bad_arguments(script, tmp_path, argv):
    checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError):
        script.parse_args(["--suncet-dir", str(tmp_path), *argv])


def test_reference_exclusions_follow_suncets_names(script):
    import re

    patterns = script._reference_exclusions()

    def excluded(path):
        return any(re.search(p, path) for p in patterns)

    # torch names with "bias" or "bn", in our paths.
    for path in [
        "paws_resnet/stem_bn1/gamma",
        "paws_resnet/stage1_block1_bn3/beta",
        "paws_resnet/stage1_block1_shortcut_bn/beta",
        "paws_projection_head/fc1/bias",
        "paws_prediction_head/bn2/gamma",
    ]:
        assert excluded(path), path
    # `downsample.1.weight` holds neither: decayed and adapted there.
    for path in [
        "paws_resnet/stage1_block1_shortcut_bn/gamma",
        "paws_resnet/stem_conv1/kernel",
        "paws_projection_head/fc3/kernel",
    ]:
        assert not excluded(path), path


def test_relative_difference(script):
    b = np.array([1.0, -4.0, 2.0])
    assert script._relative(b + [0.0, 0.0, 0.004], b) == pytest.approx(1e-3)
    assert script._relative(np.zeros(2), np.zeros(2)) == 0.0
    assert script._relative(np.ones(2), np.zeros(2)) == math.inf


def test_the_step_data_is_class_ordered_and_repeatable(script, tmp_path):
    checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(["--suncet-dir", str(tmp_path)])
    first, again = script.step_data(args, 3), script.step_data(args, 3)
    np.testing.assert_array_equal(first["small"][1], again["small"][1])
    assert first["small"][0].shape == (args.batch, 18, 18, 3)
    assert len(first["support"]) == args.support_views
    np.testing.assert_array_equal(
        first["labels"], np.tile(np.arange(args.classes), 2)
    )


def test_knn_and_mean_cosine(runs):
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    queries = np.array([[1.0, 0.05], [0.05, 1.0], [1.0, 0.0]])
    assert runs.knn_accuracy(bank, labels, queries, np.array([0, 1, 1]), 2) == (
        pytest.approx(2 / 3)
    )
    assert runs.mean_cosine(np.ones((3, 4))) == pytest.approx(1.0)
    assert runs.mean_cosine(np.eye(3)) == pytest.approx(0.0)


def test_runs_need_the_data_folder(runs, tmp_path):
    with pytest.raises(ValueError, match="--data"):
        runs.parse_args(["--sides", "ours", "--data", str(tmp_path)])
    with pytest.raises(ValueError):
        runs.parse_args(["--sides", "theirs", "--report"])
