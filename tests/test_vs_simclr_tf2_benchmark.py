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
