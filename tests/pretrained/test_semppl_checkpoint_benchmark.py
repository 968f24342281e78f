"""`benchmarks/semppl_checkpoint.py` without the reference: its checks of
its inputs, and its comparison on files written by the tests' writer."""

import argparse
import re

import numpy as np
import pytest

from tests.pretrained import reference as ref
from tests.pretrained import semppl_files
from tests.pretrained.test_semppl_checkpoints import SemPPLReference


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("semppl_checkpoint")


def test_inputs_are_checked(script, tmp_path):
    with pytest.raises(ValueError, match="`--semppl-dir` must name"):
        script.parse_args([])
    with pytest.raises(ValueError, match="stats_batch=-1"):
        script.parse_args(["--semppl-dir", str(tmp_path), "--stats-batch=-1"])
    with pytest.raises(ValueError, match="batch=3"):
        script.parse_args(["--semppl-dir", str(tmp_path), "--batch", "3"])


def test_compare_reads_both_layouts(script, tmp_path, capsys):
    x = ref.images(1, 16)
    online, target = SemPPLReference(seed=0), SemPPLReference(seed=1)
    expected = {f"online_{k}": v for k, v in online.online(x, 18).items()}
    expected["target_features"] = target.online(x, 18)["features"]
    networks = {
        "online": (online.params, online.state),
        "target": (target.params, target.state),
    }
    semppl_files.write_pretraining(tmp_path / "pretrain.pkl", networks)
    # Linear evaluation: the online network as the backbone, and a new
    # classifier `linear`.
    rng = np.random.default_rng(3)
    linear = {
        "w": rng.normal(size=(128, 4)).astype("float32"),
        "b": rng.normal(size=4).astype("float32"),
    }
    semppl_files.write_linear_eval(
        tmp_path / "linear-eval.pkl", networks["online"], linear
    )
    expected["eval_features"] = expected["online_features"]
    expected["eval_logits"] = expected["online_features"] @ linear["w"]
    expected["eval_logits"] += linear["b"]
    # Wrong "float64" outputs for one row: the table must show it.
    exact = {f"{k}_float64": v for k, v in expected.items()}
    exact["online_logits_float64"] = exact["online_logits_float64"] + 1.0
    np.savez(tmp_path / "reference.npz", images=x, **expected, **exact)
    script.compare(
        argparse.Namespace(depth=18, width=1, devices=2), str(tmp_path)
    )
    out = capsys.readouterr().out
    rows = [
        [v.strip() for v in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith(("| pretrain", "| linear"))
    ]
    assert [row[:3] for row in rows] == [
        list(key) for key in _rows(script.OUTPUTS)
    ]
    for file, _, output, ours, theirs, exact_diff in rows:
        assert float(ours) < 1e-5
        if (file, output) == ("pretrain.pkl", "logits"):
            assert float(theirs) > 0.1 and float(exact_diff) > 0.1
        else:
            assert float(theirs) == 0.0 and float(exact_diff) < 1e-5
    assert re.search(r"linear-eval\.pkl \(\d+ MiB\), backbone: read in", out)


def _rows(outputs):
    return [
        (file, network, output)
        for file, entries in outputs.items()
        for network, output, _ in entries
    ]
