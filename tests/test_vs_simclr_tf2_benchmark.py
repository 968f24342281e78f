"""`benchmarks/vs_simclr_tf2.py`'s arguments, without the reference."""

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("vs_simclr_tf2")


def test_simclr_dir_is_required_for_the_reference(script):
    with pytest.raises(ValueError, match="--simclr-dir"):
        script.parse_args([])


def test_simclr_dir_without_its_tf2_code_is_rejected(script, tmp_path):
    (tmp_path / "tf2").mkdir()
    (tmp_path / "tf2" / "resnet.py").write_text("")
    with pytest.raises(ValueError, match="lacks model.py, lars_optimizer.py"):
        script.parse_args(["--simclr-dir", str(tmp_path)])


def test_arguments_of_a_checkout(script, tmp_path):
    (tmp_path / "tf2").mkdir()
    for name in ("model.py", "resnet.py", "lars_optimizer.py", "objective.py"):
        (tmp_path / "tf2" / name).write_text("")
    args = script.parse_args(
        ["--simclr-dir", str(tmp_path), "--batch", "8", "--steps", "2"]
    )
    assert args.simclr_tf2 == str(tmp_path / "tf2")
    assert (args.batch, args.width, args.steps) == (8, 1, 2)
    assert args.contenders[:2] == ["reference", "ours"]


def test_ours_alone_needs_no_reference(script):
    args = script.parse_args(["--contenders", "ours,ours_bf16"])
    assert args.contenders == ["ours", "ours_bf16"]


@pytest.mark.parametrize(
    "argv", [["--contenders", "ours,theirs"], ["--batch", "1"]]
)
def test_bad_arguments(script, argv):
    with pytest.raises(ValueError):
        script.parse_args(argv)


def test_the_convolutions_floor_runs_each_convolution_of_the_step(script):
    import keras
    import tensorflow as tf

    from keras_ssl.backbones import ResNet

    encoder = ResNet(
        depth=18, width_multiplier=0.125, stem="cifar", input_shape=(8, 8, 3)
    )
    convolutions = [
        layer
        for layer in encoder._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Conv2D)
    ]
    step = script._convolutions_only(encoder, batch=4)
    assert np.isfinite(step().numpy())
    graph = step.get_concrete_function().graph
    # Ops whose result is used: TensorFlow's gradient of a convolution
    # builds both gradients, and the graph optimizer prunes the unused one.
    kinds = [
        op.type
        for op in graph.get_operations()
        if any(output.consumers() for output in op.outputs)
    ]
    # Forward and kernel gradient of every layer; no input gradient for
    # the stem, whose input is the images.
    assert kinds.count("Conv2D") == len(convolutions) > 10
    assert kinds.count("Conv2DBackpropFilter") == len(convolutions)
    assert kinds.count("Conv2DBackpropInput") == len(convolutions) - 1
    assert not [k for k in kinds if "BatchNorm" in k or k == "Relu"]
    assert tf.executing_eagerly()


def _cifar_resnet18_flops(width, size, batch):
    """The step's convolution FLOPs, counted from the architecture by hand.

    Stem: 3×3, 3 -> 64w channels at full size. Four stages of two basic
    blocks (two 3×3 convolutions each); the first block of each stage has
    a 1×1 projection shortcut, and stages 2-4 halve the size in its first
    3×3 convolution and shortcut. Each convolution costs 2·H'·W'·k²·Cin·Cout
    per image forward, as much for its kernel gradient, and as much for
    its input gradient except the stem's.
    """
    channels = [int(64 * width * 2**i) for i in range(4)]
    # (output size, kernel, input channels, output channels)
    convs = [(size, 3, 3, channels[0])]
    c_in = channels[0]
    for stage, c_out in enumerate(channels):
        if stage:
            size //= 2
        convs += [(size, 3, c_in, c_out), (size, 3, c_out, c_out)]
        convs += [(size, 1, c_in, c_out)]
        convs += [(size, 3, c_out, c_out)] * 2
        c_in = c_out
    forward = [2 * batch * s * s * k * k * ci * co for s, k, ci, co in convs]
    return 3 * sum(forward) - forward[0]


@pytest.mark.parametrize("width,size", [(0.125, 8), (0.25, 16)])
def test_convolution_flops_counts_every_convolution_of_the_step(
    script, width, size
):
    from keras_ssl.backbones import ResNet

    encoder = ResNet(
        depth=18,
        width_multiplier=width,
        stem="cifar",
        input_shape=(size, size, 3),
    )
    assert script.convolution_flops(encoder, 6) == _cifar_resnet18_flops(
        width, size, 6
    )


def test_rates_are_the_flops_over_each_median_wall_time(script):
    results = {
        "reference": {"wall": [3.0, 2.0, 9.0]},
        "ours": {"wall": [1.0, 1.5, 2.0]},
    }
    infos = {"reference": {}, "ours": {"convolution_flops": 6e9}}
    lines = script._rates(results, infos, ["reference", "ours"])
    assert "6.0 GFLOP" in lines[0]
    assert lines[1:] == [
        "  reference: 2.0 GFLOP/s",
        "  ours: 4.0 GFLOP/s",
        "  1.25x reference needs 2.5 GFLOP/s",
    ]
    # Without one of our contenders there is no count.
    assert script._rates(results, {"reference": {}}, ["reference"]) == []
