"""`benchmarks/gpu_cifar10.py` runs end to end at a tiny size on a CPU."""

import importlib.util

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the benchmark runs keras-ssl on JAX (CI runs it there)",
)


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("gpu_cifar10")


@pytest.mark.slow
def test_tiny_run_reports_throughput_and_accuracy(script, capsys):
    frameworks = ["keras"]
    if importlib.util.find_spec("lightly") is not None:
        frameworks.append("lightly")
    reports = script.main(
        ["--tiny", "--epochs", "2", "--frameworks", ",".join(frameworks)]
    )
    assert sorted(reports) == sorted(frameworks)
    for report in reports.values():
        assert len(report.rates) == 2 and report.steady_rate > 0
        assert all(0.0 <= a <= 1.0 for a in report.accuracies)
    out = capsys.readouterr().out
    assert out.count("[keras-ssl (JAX)] epoch") == 2
    assert "k-NN test accuracy" in out


def test_unknown_framework_is_rejected(script):
    with pytest.raises(ValueError, match="frameworks='keras,tensorflow'"):
        script.main(["--tiny", "--frameworks", "keras,tensorflow"])


def test_missing_data_file_is_named(script, tmp_path):
    missing = str(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="none.npz"):
        script.main(["--data", missing, "--frameworks", "keras"])
