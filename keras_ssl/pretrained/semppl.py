"""SemPPL checkpoints (Haiku parameter and state trees) as keras_ssl models.

google-deepmind/semppl pickles `{"experiment_state": ..., "step", "rng"}`
with dill (protocol 2). Two layouts:

- pretraining (the released `.pkl` files; `eval_experiment.py` reads them
  as `checkpoint_to_evaluate`): `experiment_state` maps `online_params` /
  `online_state` (and `target_params` / `target_state`) to Haiku trees
  whose every leaf carries a leading device axis (the replicated
  `jax.pmap` state; SemPPL takes `helpers.get_first` of it);
- linear evaluation (written by its `Checkpointer`): `experiment_state` is
  the `_EvalExperimentState` named tuple, first device's copy, with
  `backbone_params` / `backbone_state` and `classif_params` (`linear`).

Haiku names the encoder's modules `res_net50/~/block_group_0/~/block_0/
~/conv_0`... (modules made in `__init__` are joined with `/~/`); BYOL's
`MLP` makes its layers inside `__call__`, so they are `projector/linear`,
`projector/batch_norm`, `projector/linear_1` (and the same under
`predictor`); the online classifier is `classifier`. BatchNorm statistics
are the `average` of the `.../~/mean_ema` and `.../~/var_ema` state.
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
NETWORKS = ("online", "target")
LAYOUTS = (
    "`online_params` / `online_state` (pretraining) or `backbone_params` "
    "/ `backbone_state` (linear evaluation)"
)


def load_semppl(path, network="online"):
    """Loads a SemPPL `.pkl` checkpoint as a `PretrainedModel`.

    Reads the pickle with `keras_ssl.pretrained.SafeUnpickler` (no dill,
    Haiku or JAX needed; nothing in the file is run: dill's and JAX's
    array reconstructors are rebuilt as NumPy arrays, any other callable
    is refused). Depth, width and the heads come from the parameter tree;
    a leading device axis (the replicated `jax.pmap` state of the
    published files) is dropped, keeping the first device's copy as
    SemPPL does. The encoder is a `keras_ssl.backbones.ResNet` with
    Haiku's `"same"` padding that normalises `[0, 1]` images with ImageNet
    statistics, as SemPPL's input pipeline does.

    The published SK variants use a network that the released code does
    not define; modules that the reader does not know are refused, named.

    Args:
        path: str. A SemPPL checkpoint, e.g. `resnet_50_1x_10_pct.pkl`.
        network: str. `"online"` or `"target"`: which of a pretraining
            checkpoint's networks to read. A linear-evaluation checkpoint
            holds one network (`"online"`). Defaults to `"online"`.

    Returns:
        A `keras_ssl.pretrained.PretrainedModel` with `"features"`, and
        `"projection"` and `"prediction"` where the network has BYOL's
        projector and predictor, and `"logits"`: from the linear
        evaluation's classifier (`linear`) in a linear-evaluation
        checkpoint, else from the online classifier (`classifier`) where
        it was saved. (SemPPL's evaluation keeps the whole online network
        as its backbone, so a linear-evaluation file has the heads too.)

    References:
        - [Bošnjak et al., 2023](https://arxiv.org/abs/2301.05158) (SemPPL).
    """
    if network not in NETWORKS:
        raise ValueError(
            f"`network` must be one of {NETWORKS}. Received: "
            f"network={network!r}"
        )
    tree = load_pickle(path)
    state = (
        tree.get("experiment_state", tree) if isinstance(tree, dict) else tree
    )
    if hasattr(state, "_asdict"):  # `_EvalExperimentState`
        state = state._asdict()
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not SemPPL's "
            f"experiment state: expected {LAYOUTS}."
        )
    if f"{network}_params" in state:
        params = state[f"{network}_params"]
        bn_state = state.get(f"{network}_state")
    elif "backbone_params" in state and network == "online":
        params = dict(state["backbone_params"])
        params.update(state.get("classif_params") or {})
        bn_state = state.get("backbone_state")
    else:
        wanted = (
            "`target_params` / `target_state`"
            if network == "target"
            else LAYOUTS
        )
        raise ValueError(
            f"{path} holds no {network} network: expected {wanted}; its "
            f"experiment state holds {sorted(state)}."
        )
    if not isinstance(params, dict) or not isinstance(bn_state, dict):
        raise ValueError(
            f"{path}: the {network} network's parameters and BatchNorm state "
            f"must be Haiku trees (dicts); got {type(params).__name__} and "
            f"{type(bn_state).__name__}. Experiment state: {sorted(state)}."
        )
    reader = _Tree(params, bn_state, f"SemPPL checkpoint {path}")
    encoder = _encoder(reader)
    head = predictor = classifier = None
    if "projector/linear" in params:
        head = _mlp(reader, "projector")
        if "predictor/linear" in params:
            predictor = _mlp(reader, "predictor")
    if "linear" in params:
        # A linear-evaluation file: its classifier `linear`; the backbone
        # (the pretraining's online network) still holds that run's online
        # classifier, which this one supersedes.
        classifier = _linear(reader, "linear", "classifier")
        reader.used.add("classifier")
    elif "classifier" in params:
        classifier = _linear(reader, "classifier", "classifier")
    reader.check_all_used()
    return PretrainedModel(
        encoder,
        head=head,
        classifier=classifier,
        predictor=predictor,
        name="semppl",
    )


class _Tree:
    """Haiku `params` / `state` lookups that record what was read.

    `devices` is the length of the leading device axis every leaf carries
    (`None` for a tree without one), found from the encoder's stem kernel.
    """

    def __init__(self, params, state, source):
        self.params, self.state, self.source = params, state, source
        self.used = set()
        self.devices = None

    def _value(self, value, name, ndim):
        value = np.asarray(value)
        if self.devices is not None:
            if value.ndim != ndim + 1 or value.shape[0] != self.devices:
                raise ValueError(
                    f"{self.source}: `{name}` has shape {value.shape}; "
                    f"every leaf should have the leading device axis "
                    f"({self.devices}) and {ndim} more dimensions."
                )
            return value[0]
        if value.ndim != ndim:
            raise ValueError(
                f"{self.source}: `{name}` has shape {value.shape}, not "
                f"{ndim} dimensions."
            )
        return value

    def param(self, module, name, ndim):
        self.used.add(module)
        if module not in self.params or name not in self.params[module]:
            raise ValueError(
                f"{self.source} has no parameter {module}/{name}; "
                f"{module} holds {sorted(self.params.get(module, {}))}."
            )
        return self._value(self.params[module][name], f"{module}/{name}", ndim)

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
            if key not in self.state or "average" not in self.state[key]:
                raise ValueError(
                    f"{self.source} has no BatchNorm state {key}/average."
                )
            values[ours] = self._value(
                self.state[key]["average"], f"{key}/average", ndim
            )
        return {k: v.reshape(-1) for k, v in values.items()}

    def check_all_used(self):
        unused = sorted(set(self.params) - self.used)
        if unused:
            raise ValueError(
                f"{self.source} has modules that keras_ssl's ResNet and "
                f"SemPPL heads do not read: {unused[:8]}"
                + (f" (and {len(unused) - 8} more)" if len(unused) > 8 else "")
                + ". (The released code defines no other network; the SK "
                "variants' are not read.)"
            )


def _encoder(reader):
    """The Haiku ResNet of the checkpoint as a `ResNet` with its weights."""
    prefix = _resnet_prefix(reader)
    stem_shape = np.shape(reader.params[f"{prefix}/~/initial_conv"].get("w"))
    if len(stem_shape) == 5:
        reader.devices = stem_shape[0]
    blocks, bottleneck = _block_counts(reader, prefix)
    depths = [
        d
        for d, b in STAGE_BLOCKS.items()
        if b == blocks and (d >= 50) == bottleneck
    ]
    if not depths:
        raise ValueError(
            f"{reader.source}: no ResNet has {blocks} blocks per stage."
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
    for group, count in enumerate(blocks):
        for block in range(count):
            _put_block(values, reader, prefix, group, block, bottleneck)
    assign(encoder, values, reader.source)
    return encoder


def _resnet_prefix(reader):
    """The name of the checkpoint's one Haiku ResNet module."""
    prefixes = [
        k[: -len("/~/initial_conv")]
        for k in reader.params
        if k.endswith("/~/initial_conv")
    ]
    if len(prefixes) != 1:
        modules = sorted({k.split("/")[0] for k in reader.params})
        raise ValueError(
            f"{reader.source} holds no single Haiku ResNet (a module named "
            f"`<name>/~/initial_conv`); its top-level modules are {modules}."
        )
    return prefixes[0]


def _block_counts(reader, prefix):
    """Blocks per stage, and whether the blocks are bottlenecks."""
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
    return tuple(blocks), bottleneck


def _put_block(values, reader, prefix, group, block, bottleneck):
    """The weights of one residual block under our `ResNet`'s paths."""
    theirs = f"{prefix}/~/block_group_{group}/~/block_{block}/~/"
    ours = f"stage{group + 1}_block{block + 1}_"
    pairs = [
        (f"conv_{i}", f"batchnorm_{i}", f"conv{i + 1}", f"bn{i + 1}")
        for i in range(3 if bottleneck else 2)
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
        values[f"{ours}{our_conv}/kernel"] = reader.param(theirs + conv, "w", 4)
        _put_bn(values, ours + our_bn, reader.bn(theirs + bn, 4))


def _put_bn(values, layer, bn):
    for name, value in bn.items():
        values[f"{layer}/{name}"] = value


def _mlp(reader, module):
    """BYOL's `MLP`: Linear (bias) -> BatchNorm -> ReLU -> Linear."""
    w0 = reader.param(f"{module}/linear", "w", 2)
    w1 = reader.param(f"{module}/linear_1", "w", 2)
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
        "linear/bias": reader.param(f"{module}/linear", "b", 1),
        "linear_1/kernel": w1,
    }
    _put_bn(values, "batch_norm", reader.bn(f"{module}/batch_norm", 2))
    assign(mlp, values, f"{reader.source} ({module})")
    return mlp


def _linear(reader, module, name):
    w = reader.param(module, "w", 2)
    layer = keras.layers.Dense(w.shape[1], name=name)
    layer.build((None, w.shape[0]))
    values = {"kernel": w, "bias": reader.param(module, "b", 1)}
    assign(layer, values, f"{reader.source} ({module})")
    return layer
