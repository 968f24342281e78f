"""`benchmarks/conv_kernels.py`: the kernels of the step, one at a time."""

import re

import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("conv_kernels")


@pytest.mark.parametrize(
    "argv",
    [["--batch", "0"], ["--repeats", "0"], ["--size", "4"], ["--matmul", "-1"]],
)
def test_bad_arguments(script, argv):
    with pytest.raises(ValueError, match=re.escape(argv[0])):
        script.parse_args(argv)


def test_distinct_convolutions_group_the_layers(script):
    from keras_ssl.backbones import ResNet

    encoder = ResNet(
        depth=18, width_multiplier=0.125, stem="cifar", input_shape=(8, 8, 3)
    )
    groups = script.distinct_convolutions(encoder)
    # Stem; stage 1: 3×3 and shortcut; stages 2-4: strided 3×3, strided
    # shortcut, 3×3.
    assert len(groups) == 12
    assert sum(count for _, count, _ in groups) == 21
    assert [first for _, _, first in groups] == [True] + [False] * 11
    assert tuple(groups[0][0].kernel.shape) == (3, 3, 3, 8)


def test_report_adds_the_kernels_up_as_the_step_runs_them(script):
    args = script.parse_args(
        ["--batch", "2", "--size", "8", "--repeats", "1", "--matmul", "64"]
    )
    encoder, rows, peak = script.measure(args)
    assert len(rows) == 12 and peak > 0
    for _, _, _, seconds in rows:
        assert set(seconds) == set(script.KERNELS)
        assert all(s > 0 for s in seconds.values())
    text = script.report(args, encoder, rows, peak)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 12  # header, rule, one row per group
    assert sum(int(row.split("|")[4]) for row in table[2:]) == 21
    # The serial time is the step's kernels: every layer's forward and
    # kernel gradient, the input gradient of all but the stem.
    serial = sum(
        count * (s["forward"] + s["kernel gradient"])
        + (count - first) * s["input gradient"]
        for _, count, first, s in rows
    )
    match = re.search(r"one after another at these rates ([\d.]+) s", text)
    assert float(match.group(1)) == pytest.approx(serial, abs=1e-3)
    assert "float32 matmul 64³" in text
