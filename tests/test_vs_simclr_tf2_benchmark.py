"""`benchmarks/vs_simclr_tf2.py`'s arguments, without the reference."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "vs_simclr_tf2", ROOT / "benchmarks" / "vs_simclr_tf2.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simclr_dir_is_required_for_the_reference():
    with pytest.raises(ValueError, match="--simclr-dir"):
        _benchmark().parse_args([])


def test_simclr_dir_without_its_tf2_code_is_rejected(tmp_path):
    (tmp_path / "tf2").mkdir()
    (tmp_path / "tf2" / "resnet.py").write_text("")
    with pytest.raises(ValueError, match="lacks model.py, lars_optimizer.py"):
        _benchmark().parse_args(["--simclr-dir", str(tmp_path)])


def test_arguments_of_a_checkout(tmp_path):
    (tmp_path / "tf2").mkdir()
    for name in ("model.py", "resnet.py", "lars_optimizer.py", "objective.py"):
        (tmp_path / "tf2" / name).write_text("")
    args = _benchmark().parse_args(
        ["--simclr-dir", str(tmp_path), "--batch", "8", "--steps", "2"]
    )
    assert args.simclr_tf2 == str(tmp_path / "tf2")
    assert (args.batch, args.width, args.steps) == (8, 1, 2)
    assert args.contenders[:2] == ["reference", "ours"]


def test_ours_alone_needs_no_reference():
    args = _benchmark().parse_args(["--contenders", "ours,ours_bf16"])
    assert args.contenders == ["ours", "ours_bf16"]


@pytest.mark.parametrize(
    "argv", [["--contenders", "ours,theirs"], ["--batch", "1"]]
)
def test_bad_arguments(argv):
    with pytest.raises(ValueError):
        _benchmark().parse_args(argv)
