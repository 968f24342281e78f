"""`benchmarks/parity_simclr_tf2.py`'s checks of its input, without the
reference."""

import os
import stat
import sys
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


def _python_without_site_packages(tmp_path):
    """An interpreter that sees only the standard library and PYTHONPATH."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return str(python)


def test_a_reference_python_without_tf_keras_is_named(
    script, tmp_path, monkeypatch
):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    python = _python_without_site_packages(tmp_path)
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
