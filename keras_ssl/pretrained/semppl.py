"""SemPPL checkpoints (Haiku parameter and state trees) as keras_ssl models.

google-deepmind/semppl pickles `{"experiment_state": ..., "step", "rng"}`
with dill. The pretraining state holds `online_params` / `online_state`
(the encoder, BYOL's `projector` and `predictor` MLPs); the linear-eval
state holds `backbone_params` / `backbone_state` and `classif_params`.
The encoder is Haiku's ResNet v1 (`res_net50/~/block_group_0/~/block_0/
~/conv_0`...) with `"SAME"` padding everywhere; BatchNorm statistics are
the `average` of the `mean_ema` / `var_ema` state.
"""

import keras
import numpy as np

from keras_ssl.backbones.resnet import STAGE_BLOCKS
from keras_ssl.backbones.resnet import ResNet
from keras_ssl.pretrained.paws import IMAGENET_MEAN
from keras_ssl.pretrained.paws import IMAGENET_STD
from keras_ssl.pretrained.pretrained_model import PretrainedModel
from keras_ssl.pretrained.pretrained_model import assign
from keras_ssl.pretrained.safe_unpickler import load_pickle

HAIKU_EPSILON = 1e-5


def load_semppl(path):
    """Loads a SemPPL `.pkl` checkpoint as a `PretrainedModel`.

    Reads the pickle with `keras_ssl.pretrained.SafeUnpickler` (no dill,
    Haiku or JAX needed; nothing in the file is run). Depth, width and the
    heads come from the parameter tree; a leading replica axis (as
    `jax.pmap` leaves it) is dropped. The encoder is a
    `keras_ssl.backbones.ResNet` with Haiku's `"same"` padding that
    normalises `[0, 1]` images with ImageNet statistics, as SemPPL's input
    pipeline does.

    The published SK variants use a network that the released code does
    not define; their parameters are refused by name.

    Args:
        path: str. A SemPPL checkpoint, e.g. `resnet_50_1x_10pct.pkl`.

    Returns:
        A `keras_ssl.pretrained.PretrainedModel` with `"projection"` and
        `"prediction"` outputs (pretraining checkpoints) or `"logits"`
        (linear-evaluation checkpoints).

    References:
        - [Bošnjak et al., 2023](https://arxiv.org/abs/2301.05158) (SemPPL).
    """
    tree = load_pickle(path)
    state = tree.get("experiment_state", tree)
    if "online_params" in state:
        params, bn_state = state["online_params"], state["online_state"]
    elif "backbone_params" in state:
        params = dict(state["backbone_params"])
        params.update(state.get("classif_params", {}))
        bn_state = state["backbone_state"]
    else:
        raise ValueError(
            f"{path} holds neither `online_params` (pretraining) nor "
            f"`backbone_params` (linear evaluation): {sorted(state)[:8]}."
        )
    reader = _Tree(params, bn_state, f"SemPPL checkpoint {path}")
    encoder = _encoder(reader)
    head = _mlp(reader, "projector") if "projector/~/linear" in params else None
    predictor = None
    if head is not None and "predictor/~/linear" in params:
        predictor = _mlp(reader, "predictor")
    classifier = None
    for name in ("classifier", "linear"):
        if name in params:
            classifier = _linear(reader, name, "classifier")
    reader.check_all_used()
    return PretrainedModel(
        encoder,
        head=head,
        classifier=classifier,
        predictor=predictor,
        name="semppl",
    )


class _Tree:
    """Haiku `params` / `state` lookups that record what was read."""

    def __init__(self, params, state, source):
        self.params, self.state, self.source = params, state, source
        self.used = set()

    def param(self, module, name, ndim):
        self.used.add(module)
        if module not in self.params or name not in self.params[module]:
            raise ValueError(f"{self.source} has no parameter {module}/{name}.")
        return _drop_replica_axis(self.params[module][name], ndim)

    def bn(self, module, ndim):
        values = {
            "gamma": self.param(module, "scale", ndim),
            "beta": self.param(module, "offset", ndim),
        }
        for ema, ours in (
            ("mean_ema", "moving_mean"),
            ("var_ema", "moving_variance"),
        ):
            key = f"{module}/~/{ema}"
            if key not in self.state:
                raise ValueError(f"{self.source} has no state {key}.")
            average = self.state[key]["average"]
            values[ours] = _drop_replica_axis(average, ndim)
        return {k: v.reshape(-1) for k, v in values.items()}

    def check_all_used(self):
        unused = sorted(set(self.params) - self.used)
        if unused:
            raise ValueError(
                f"{self.source} has parameters that keras_ssl's ResNet and "
                f"heads do not read (an SK network?): {unused[:6]}."
            )


def _drop_replica_axis(value, ndim):
    value = np.asarray(value)
    return value[0] if value.ndim == ndim + 1 else value


def _encoder(reader):
    prefixes = [
        k[: -len("/~/initial_conv")]
        for k in reader.params
        if k.endswith("/~/initial_conv")
    ]
    if len(prefixes) != 1:
        raise ValueError(f"{reader.source} holds no single Haiku ResNet.")
    prefix = prefixes[0]
    blocks = []
    for group in range(4):
        count = 0
        while (
            f"{prefix}/~/block_group_{group}/~/block_{count}/~/conv_0"
            in reader.params
        ):
            count += 1
        blocks.append(count)
    bottleneck = f"{prefix}/~/block_group_0/~/block_0/~/conv_2" in reader.params
    depths = [
        d
        for d, b in STAGE_BLOCKS.items()
        if b == tuple(blocks) and (d >= 50) == bottleneck
    ]
    if not depths:
        raise ValueError(
            f"{reader.source}: no ResNet has {tuple(blocks)} blocks per stage."
        )
    stem = reader.param(f"{prefix}/~/initial_conv", "w", 4)
    encoder = ResNet(
        depth=depths[0],
        width_multiplier=stem.shape[-1] / 64,
        conv_padding="same",
        input_mean=IMAGENET_MEAN,
        input_std=IMAGENET_STD,
        bn_epsilon=HAIKU_EPSILON,
        name="semppl_resnet",
    )
    values = {"stem_conv1/kernel": stem}
    _put_bn(values, "stem_bn1", reader.bn(f"{prefix}/~/initial_batchnorm", 4))
    convs = 3 if bottleneck else 2
    for group, count in enumerate(blocks):
        for block in range(count):
            theirs = f"{prefix}/~/block_group_{group}/~/block_{block}/~/"
            ours = f"stage{group + 1}_block{block + 1}_"
            pairs = [
                (f"conv_{i}", f"batchnorm_{i}", f"conv{i + 1}", f"bn{i + 1}")
                for i in range(convs)
            ]
            if block == 0:
                pairs.append(
                    (
                        "shortcut_conv",
                        "shortcut_batchnorm",
                        "shortcut_conv",
                        "shortcut_bn",
                    )
                )
            for conv, bn, our_conv, our_bn in pairs:
                values[f"{ours}{our_conv}/kernel"] = reader.param(
                    theirs + conv, "w", 4
                )
                _put_bn(values, ours + our_bn, reader.bn(theirs + bn, 4))
    assign(encoder, values, reader.source)
    return encoder


def _put_bn(values, layer, bn):
    for name, value in bn.items():
        values[f"{layer}/{name}"] = value


def _mlp(reader, module):
    """BYOL's `MLP`: Linear (bias) -> BatchNorm -> ReLU -> Linear."""
    w0 = reader.param(f"{module}/~/linear", "w", 2)
    w1 = reader.param(f"{module}/~/linear_1", "w", 2)
    mlp = keras.Sequential(
        [
            keras.layers.Dense(w0.shape[1], name="linear"),
            keras.layers.BatchNormalization(
                epsilon=HAIKU_EPSILON, name="batch_norm"
            ),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(w1.shape[1], use_bias=False, name="linear_1"),
        ],
        name=module,
    )
    mlp.build((None, w0.shape[0]))
    values = {
        "linear/kernel": w0,
        "linear/bias": reader.param(f"{module}/~/linear", "b", 1),
        "linear_1/kernel": w1,
    }
    _put_bn(values, "batch_norm", reader.bn(f"{module}/~/batch_norm", 2))
    assign(mlp, values, f"{reader.source} ({module})")
    return mlp


def _linear(reader, module, name):
    w = reader.param(module, "w", 2)
    layer = keras.layers.Dense(w.shape[1], name=name)
    layer.build((None, w.shape[0]))
    values = {"kernel": w, "bias": reader.param(module, "b", 1)}
    assign(layer, values, f"{reader.source} ({module})")
    return layer
