"""`benchmarks/bf16_kernels.py`: its FLOP count and its arguments."""

import keras
import pytest


def test_flops_count_the_three_kernels_as_the_step_comparison_does(
    load_benchmark,
):
    module = load_benchmark("bf16_kernels")
    vs_simclr_tf2 = load_benchmark("vs_simclr_tf2")
    inputs = keras.Input((32, 32, 64))
    layer = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)
    layer(inputs)
    for batch in (1, 128):
        expected = 3 * vs_simclr_tf2.layer_flops(layer, batch)
        assert module.flops(batch) == expected


def test_bad_arguments_are_refused(load_benchmark):
    module = load_benchmark("bf16_kernels")
    with pytest.raises(ValueError, match="repeats=0"):
        module.parse_args(["--repeats", "0"])
