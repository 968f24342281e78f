"""PAWS checkpoints (facebookresearch/suncet `.pth.tar`) as keras_ssl models.

suncet's ResNet is torchvision's ResNet v1.5 (the stride in the 3x3 conv
of a bottleneck, convs padded by `k // 2`, a 3x3/2 max-pool padded by one
pixel on every side) with a `widen` factor. Its checkpoints hold
`{"encoder": state_dict, ...}` with the backbone, the projection head `fc`
(`fc1 bn1 relu1 fc2 bn2 relu2 fc3`) and the prediction head `pred`
(`bn1 fc1 bn2 relu fc2`); fine-tuned checkpoints replace `fc` with the
classifier `fc1 bn1 relu1 fc2`.
"""

import re

import keras
import numpy as np

from keras_ssl.backbones.resnet import STAGE_BLOCKS
from keras_ssl.backbones.resnet import ResNet
from keras_ssl.pretrained.pretrained_model import PretrainedModel
from keras_ssl.pretrained.pretrained_model import assign
from keras_ssl.pretrained.safe_unpickler import load_torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_EPSILON = 1e-5
HEADS = {
    "projection": (("fc1", "bn1", "relu1", "fc2", "bn2", "relu2", "fc3"), "fc"),
    "classifier": (("fc1", "bn1", "relu1", "fc2"), "fc"),
    "predictor": (("bn1", "fc1", "bn2", "relu", "fc2"), "pred"),
}


def load_paws(path):
    """Loads a PAWS `.pth.tar` checkpoint as a `PretrainedModel`.

    Reads the file with `keras_ssl.pretrained.load_torch` (no PyTorch
    needed, no code from the file run). The encoder is a
    `keras_ssl.backbones.ResNet` with PyTorch's max-pool padding that
    normalises `[0, 1]` images with the ImageNet statistics PAWS trained
    with; depth and width come from the state dict. Pretrained checkpoints
    give `"projection"` and `"prediction"` outputs, fine-tuned ones
    `"logits"`.

    Args:
        path: str. A PAWS checkpoint, e.g. `paws_imgnt_10percent_300ep.pth.tar`.

    Returns:
        A `keras_ssl.pretrained.PretrainedModel`.

    References:
        - [Assran et al., 2021](https://arxiv.org/abs/2104.13963) (PAWS).
    """
    checkpoint = load_torch(path)
    state = checkpoint.get("encoder", checkpoint)
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    source = f"PAWS checkpoint {path}"
    encoder = _encoder(state, source)
    head = classifier = predictor = None
    if "fc.fc3.weight" in state:
        head = _mlp(state, "projection", "paws_projection_head", source)
    elif "fc.fc2.weight" in state:
        classifier = _mlp(state, "classifier", "classifier", source)
    if "pred.fc1.weight" in state:
        predictor = _mlp(state, "predictor", "paws_prediction_head", source)
    return PretrainedModel(
        encoder,
        head=head,
        classifier=classifier,
        predictor=predictor,
        name="paws",
    )


def _encoder(state, source):
    blocks = []
    for stage in range(1, 5):
        count = 0
        while f"layer{stage}.{count}.conv1.weight" in state:
            count += 1
        blocks.append(count)
    depths = [
        d for d, b in STAGE_BLOCKS.items() if b == tuple(blocks) and d >= 50
    ]
    if "layer1.0.conv3.weight" not in state or not depths:
        raise ValueError(
            f"{source} is not a bottleneck ResNet of a known depth: blocks "
            f"per stage {tuple(blocks)}."
        )
    width = state["conv1.weight"].shape[0] / 64
    encoder = ResNet(
        depth=depths[0],
        width_multiplier=width,
        pool_padding="symmetric",
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        bn_epsilon=TORCH_EPSILON,
        name="paws_resnet",
    )
    values = {}
    _conv(values, "stem_conv1", state, "conv1")
    _bn(values, "stem_bn1", state, "bn1")
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            ours = f"stage{stage}_block{block + 1}"
            theirs = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                _conv(values, f"{ours}_conv{i}", state, f"{theirs}.conv{i}")
                _bn(values, f"{ours}_bn{i}", state, f"{theirs}.bn{i}")
            if f"{theirs}.downsample.0.weight" in state:
                _conv(
                    values,
                    f"{ours}_shortcut_conv",
                    state,
                    f"{theirs}.downsample.0",
                )
                _bn(
                    values,
                    f"{ours}_shortcut_bn",
                    state,
                    f"{theirs}.downsample.1",
                )
    assign(encoder, values, source)
    return encoder


def _conv(values, ours, state, theirs):
    # PyTorch: (out, in, h, w); Keras: (h, w, in, out).
    values[f"{ours}/kernel"] = np.transpose(
        state[f"{theirs}.weight"], (2, 3, 1, 0)
    )


def _bn(values, ours, state, theirs):
    values[f"{ours}/gamma"] = state[f"{theirs}.weight"]
    values[f"{ours}/beta"] = state[f"{theirs}.bias"]
    values[f"{ours}/moving_mean"] = state[f"{theirs}.running_mean"]
    values[f"{ours}/moving_variance"] = state[f"{theirs}.running_var"]


def _mlp(state, role, name, source):
    """A `keras.Sequential` copy of one of PAWS's `nn.Sequential` heads."""
    layers_, scope = HEADS[role]
    layers, values = [], {}
    input_dim = None
    for layer in layers_:
        key = f"{scope}.{layer}"
        if layer.startswith("relu"):
            layers.append(keras.layers.ReLU(name=layer))
        elif layer.startswith("fc"):
            out_dim, in_dim = state[f"{key}.weight"].shape
            input_dim = input_dim or in_dim
            layers.append(keras.layers.Dense(out_dim, name=layer))
            values[f"{layer}/kernel"] = state[f"{key}.weight"].T
            values[f"{layer}/bias"] = state[f"{key}.bias"]
        else:
            input_dim = input_dim or state[f"{key}.weight"].shape[0]
            layers.append(
                keras.layers.BatchNormalization(
                    epsilon=TORCH_EPSILON, name=layer
                )
            )
            _bn(values, layer, state, key)
    mlp = keras.Sequential(layers, name=name)
    mlp.build((None, input_dim))
    assign(mlp, values, f"{source} ({scope})")
    return mlp
