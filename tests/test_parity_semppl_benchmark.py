"""`benchmarks/parity_semppl.py`'s checks of its inputs, without the
reference."""

import sys
import time

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_semppl")


def _checkout(root, files):
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_semppl_dir_is_required(script):
    with pytest.raises(ValueError, match="--semppl-dir is required"):
        script.parse_args([])


def test_a_checkout_missing_files_is_named_at_once(script, tmp_path):
    _checkout(tmp_path, ["utils/__init__.py", "utils/networks.py"])
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        script.parse_args(["--semppl-dir", str(tmp_path)])
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    for name in script.REFERENCE_FILES[2:]:
        assert name in message
    assert "utils/networks.py" not in message


def test_arguments_of_a_checkout(script, tmp_path):
    _checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(
        ["--semppl-dir", str(tmp_path), "--steps", "3", "--float64"]
    )
    assert args.semppl_dir == str(tmp_path.resolve())
    assert (args.steps, args.float64, args.momentum) == (3, True, 0.996)


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--reference-python", "/nonexistent/python"], "--reference-python"),
        (["--steps", "0"], "--steps"),
        (["--momentum", "1.0"], "--momentum"),
        (["--negatives", "16"], "--negatives"),
        (["--queue", "2"], "--queue"),
        (["--short-runs"], "--data_dir"),
    ],
)
def test_bad_arguments(script, tmp_path, argv, name):
    _checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError, match=name):
        script.parse_args(["--semppl-dir", str(tmp_path)] + argv)


def test_a_reference_environment_without_jax_is_named(script, tmp_path):
    # `python -S` leaves site-packages out: no NumPy, JAX nor Haiku.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    _checkout(tmp_path / "semppl", script.REFERENCE_FILES)
    args = script.parse_args(
        [
            "--semppl-dir",
            str(tmp_path / "semppl"),
            "--reference-python",
            str(python),
        ]
    )
    with pytest.raises(RuntimeError, match="missing package.*jax.*dm-haiku"):
        script.Reference(args)


def test_fractional_width_gives_whole_channel_counts(script):
    width = script._Channels(0.125)
    assert 64 * width == 8 and isinstance(64 * width, int)
    assert width * 512 == 64 and isinstance(width * 512, int)


def test_the_reference_crop_rule(script):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(32, 32, 3)).astype("float32")
    crop = script._random_crop(image, 16, rng)
    assert crop.shape == (16, 16, 3)
    # Bilinear resizing stays within the crop's range.
    assert image.min() <= crop.min() and crop.max() <= image.max()
    # A resize to the same size is the identity.
    np.testing.assert_allclose(script._resize(image, 32), image, atol=1e-6)


def test_knn_accuracy(script):
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    queries = np.array([[1.0, 0.05], [0.05, 1.0]])
    assert script.knn_accuracy(bank, labels, queries, np.array([0, 1]), 2) == 1
    assert script.knn_accuracy(bank, labels, queries, np.array([1, 0]), 2) == 0


def test_difference_is_relative_to_the_reference(script):
    relative, absolute, scale = script._difference([1.0, 2.01], [1.0, 2.0])
    assert scale == 2.0
    np.testing.assert_allclose([relative, absolute], [0.005, 0.01])
