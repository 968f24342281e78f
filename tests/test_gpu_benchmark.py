"""`benchmarks/gpu_cifar10.py` runs end to end at a tiny size on a CPU."""

import importlib.util
import pathlib

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the benchmark runs keras-ssl on JAX (CI runs it there)",
)


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "gpu_cifar10", ROOT / "benchmarks" / "gpu_cifar10.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_run_reports_throughput_and_accuracy(capsys):
    frameworks = ["keras"]
    if importlib.util.find_spec("lightly") is not None:
        frameworks.append("lightly")
    reports = _benchmark().main(
        ["--tiny", "--epochs", "2", "--frameworks", ",".join(frameworks)]
    )
    assert sorted(reports) == sorted(frameworks)
    for report in reports.values():
        assert len(report.rates) == 2 and report.steady_rate > 0
        assert all(0.0 <= a <= 1.0 for a in report.accuracies)
    out = capsys.readouterr().out
    assert out.count("[keras-ssl (JAX)] epoch") == 2
    assert "k-NN test accuracy" in out


def test_unknown_framework_is_rejected():
    with pytest.raises(ValueError, match="frameworks='keras,tensorflow'"):
        _benchmark().main(["--tiny", "--frameworks", "keras,tensorflow"])


def test_missing_data_file_is_named(tmp_path):
    missing = str(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="none.npz"):
        _benchmark().main(["--data", missing, "--frameworks", "keras"])
