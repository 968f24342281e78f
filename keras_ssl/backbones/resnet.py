"""`ResNet`: the SimCLRv2 ResNet family (depth, width, SK, ResNet-D)."""

import contextlib
import numbers

import keras
import numpy as np

from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_one_of
from keras_ssl._checks import check_positive
from keras_ssl._checks import is_int
from keras_ssl._checks import refuse
from keras_ssl.backbones import resnet_blocks

# Blocks per stage; 18/34 use basic blocks, 50+ bottlenecks.
STAGE_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
STEMS = ("imagenet", "cifar")
CONV_PADDINGS = ("symmetric", "same")
POOL_PADDINGS = ("same", "symmetric")
SHORTCUT_POOLS = ("strided", "all")
# The arguments the blocks read from `layout`.
LAYOUT_ARGS = ("resnet_d", "shortcut_pool", "conv_padding", "pool_padding")


@keras.saving.register_keras_serializable(package="keras_ssl")
class ResNet(keras.Model):
    """A SimCLRv2 ResNet mapping images to globally pooled features.

    The encoder `f(.)` of SimCLRv2: a ResNet of depth 18 to 200, optionally
    `width_multiplier` times wider and with selective kernels (SK), ending in
    global average pooling. It maps float images `(B, H, W, 3)` in `[0, 1]`
    (the caller normalises; there is no rescaling layer) to features
    `(B, output_dim)`. Use the `"cifar"` stem for 32x32 images.

    Following SimCLR, convs have no biases, the last BN of each residual
    block starts with `gamma = 0`, strided convs pad symmetrically, and the
    first block of every stage has a projection shortcut. "Whenever SK is
    used, we also use the ResNet-D variant of ResNet" (SimCLRv2, §3.2): with
    `sk_ratio > 0` the ImageNet stem is three 3x3 convs
    (`32w, 32w, 64w` channels, the first one with stride 2) and a strided
    shortcut is a 2x2/2 average pool followed by a 1x1 conv. In a
    bottleneck block the SK conv replaces the 3x3 conv; in a basic block
    (depth 18/34, not used by SimCLRv2) it replaces the first 3x3 conv.

    `count_params()` matches every row of SimCLRv2 Table 1 (e.g. 24M for
    ResNet-50 1x, 795M for ResNet-152 3x+SK with `sk_ratio=0.0625`). That
    count includes the BN moving statistics; trainable weights alone give
    232M and 353M instead of 233M and 354M for ResNet-152 2x and 2x+SK.

    Args:
        depth: int. One of 18, 34, 50, 101, 152, 200. Defaults to `50`.
        width_multiplier: int >= 1, or a fraction such as `0.5` or `0.25`
            (any value > 0 that makes `32 * width_multiplier` a whole
            number). Multiplies every layer's width. The paper uses 1–4;
            fractions give the small networks that suit small images and
            CPUs (`0.25`: 16 to 128 channels).
            Defaults to `1`.
        sk_ratio: float in [0, 1). Width of the SK attention descriptor
            relative to the branch width (at least 32 channels); `0` turns
            SK and ResNet-D off. SimCLRv2 uses `0.0625`. Defaults to `0.0`.
        stem: str. `"imagenet"` (7x7/2 conv and 3x3/2 max-pool, or the
            ResNet-D stem with SK) or `"cifar"` (one 3x3/1 conv, no pool).
            Defaults to `"imagenet"`.
        bn_momentum: float in [0, 1). BatchNorm moving-average momentum.
            Defaults to `0.9` (SimCLR).
        bn_epsilon: float > 0. Defaults to `1e-5` (SimCLR).
        synchronized_bn: bool. Compute BatchNorm statistics over all
            replicas (SimCLR's global BN). Only used on the TensorFlow
            backend (`BatchNormalization(synchronized=True)`), where it
            matters under a `tf.distribute` strategy. Other backends get a
            plain BatchNorm: there, jit-compiling the step over the global
            batch already gives global statistics. Defaults to `False`.
        input_shape: tuple. Shape of one image. Defaults to
            `(None, None, 3)`.
        resnet_d: bool or `None`. Use the ResNet-D stem and strided
            shortcuts; `None` turns them on exactly when `sk_ratio > 0`,
            as SimCLRv2 does. SimCLR's code with SK on builds ResNet-18/34
            with ResNet-D but without SK (`sk_ratio=0, resnet_d=True`).
            Defaults to `None`.
        shortcut_pool: str. `"strided"` (He et al.) average-pools only in
            strided ResNet-D shortcuts; `"all"` also in the stride-1
            projection shortcut of stage 1 (a 2x2/1 `"same"` pool, as in
            SimCLR's code and its published checkpoints). Defaults to
            `"strided"`.
        conv_padding: str. `"symmetric"` pads strided convs by
            `(k - 1) // 2` on each side (SimCLR, PyTorch); `"same"` uses
            TensorFlow's `"same"` rule, which pads one more row and column
            at the bottom/right of even-sized inputs (Haiku, as in SemPPL's
            and BYOL's networks). Defaults to `"symmetric"`.
        pool_padding: str. Padding of the stem's 3x3/2 max-pool: `"same"`
            (TensorFlow, Haiku) or `"symmetric"` (one pixel on every side,
            PyTorch's `padding=1`, as in PAWS). Defaults to `"same"`.
        input_mean: optional sequence of 3 floats. With `input_std`, the
            network first maps images `x` to `(x - input_mean) / input_std`
            (the ImageNet statistics that PAWS and SemPPL were trained
            with), so that it still takes images in `[0, 1]`. Defaults to
            `None` (no normalisation).
        input_std: optional sequence of 3 floats > 0. Defaults to `None`.
        **kwargs: passed to `keras.Model` (e.g. `name`). A `dtype`
            policy (e.g. `"mixed_bfloat16"`) applies to every layer.

    Example:

    ```python
    encoder = keras_ssl.backbones.ResNet(depth=18, stem="cifar")
    features = encoder(np.random.uniform(size=(2, 32, 32, 3)))
    features.shape  # (2, 512) == (2, encoder.output_dim)
    ```

    References:
        - [He et al., 2016](https://arxiv.org/abs/1512.03385) (ResNet).
        - [He et al., 2019](https://arxiv.org/abs/1812.01187) (ResNet-D).
        - [Li et al., 2019](https://arxiv.org/abs/1903.06586) (SKNet).
        - [Chen et al., 2020](https://arxiv.org/abs/2006.10029) (SimCLRv2).
    """

    def __init__(
        self,
        depth=50,
        width_multiplier=1,
        sk_ratio=0.0,
        stem="imagenet",
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        synchronized_bn=False,
        input_shape=(None, None, 3),
        resnet_d=None,
        shortcut_pool="strided",
        conv_padding="symmetric",
        pool_padding="same",
        input_mean=None,
        input_std=None,
        **kwargs,
    ):
        _validate(
            depth, width_multiplier, sk_ratio, stem, bn_momentum, bn_epsilon
        )
        _validate_layout(
            resnet_d,
            shortcut_pool,
            conv_padding,
            pool_padding,
            input_mean,
            input_std,
        )
        # The arguments as plain Python numbers and lists, which keep the
        # config JSON-serialisable; `resnet_d` keeps `None` ("as SK").
        config = {
            "depth": int(depth),
            "width_multiplier": _plain_width(width_multiplier),
            "sk_ratio": float(sk_ratio),
            "stem": stem,
            "bn_momentum": float(bn_momentum),
            "bn_epsilon": float(bn_epsilon),
            "synchronized_bn": bool(synchronized_bn),
            "resnet_d": resnet_d if resnet_d is None else bool(resnet_d),
            "shortcut_pool": shortcut_pool,
            "conv_padding": conv_padding,
            "pool_padding": pool_padding,
            "input_mean": _floats(input_mean),
            "input_std": _floats(input_std),
        }
        # Every layer follows `dtype` (e.g. "mixed_bfloat16"), or the
        # global policy when it is not given.
        dtype = kwargs.pop("dtype", None)
        with _dtype_policy(dtype):
            inputs, outputs = _build_graph(config, tuple(input_shape))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._policy_name = (
            None if dtype is None else keras.dtype_policies.get(dtype).name
        )

        # === Config ===
        self._arg_names = tuple(config)
        for name, value in config.items():
            setattr(self, name, value)
        bottleneck = self.depth >= 50
        self.output_dim = int(
            (2048 if bottleneck else 512) * self.width_multiplier
        )

    def get_config(self):
        # A functional model's own config lists the layer graph; this one is
        # rebuilt from its arguments instead (`from_config` = `cls(**c)`).
        return {
            "name": self.name,
            "trainable": self.trainable,
            **{name: getattr(self, name) for name in self._arg_names},
            # `Model.input_shape` includes the batch axis.
            "input_shape": tuple(self.input_shape[1:]),
            "dtype": self._policy_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@contextlib.contextmanager
def _dtype_policy(dtype):
    """Makes `dtype` the global policy for the layers built inside."""
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _plain_width(width_multiplier):
    """`width_multiplier` as an int where it is whole, else a float."""
    if float(width_multiplier).is_integer():
        return int(width_multiplier)
    return float(width_multiplier)


def _floats(values):
    """`values` as a list of floats, or `None`."""
    return None if values is None else [float(v) for v in values]


def _build_graph(config, input_shape):
    """The functional graph: images in, globally pooled features out."""
    bn = {
        "momentum": config["bn_momentum"],
        "epsilon": config["bn_epsilon"],
        "synchronized": config["synchronized_bn"],
    }
    layout = {name: config[name] for name in LAYOUT_ARGS}
    if layout["resnet_d"] is None:
        # SimCLRv2 uses ResNet-D exactly where it uses SK.
        layout["resnet_d"] = config["sk_ratio"] > 0
    width = config["width_multiplier"]
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if config["input_mean"] is not None:
        # float64 constants, cast to the layer's dtype when it builds: a
        # Python list would be made float32 first, which puts a float64
        # network's input 8e-8 off the exact normalization.
        x = keras.layers.Normalization(
            mean=np.asarray(config["input_mean"], "float64"),
            variance=np.square(np.asarray(config["input_std"], "float64")),
            name="input_normalization",
        )(x)
    x = resnet_blocks.apply_stem(
        x, config["stem"], width, layout["resnet_d"], bn, layout
    )
    x = _apply_stages(x, config, bn, layout)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return inputs, outputs


def _apply_stages(x, config, bn, layout):
    """The four stages of residual blocks; 18/34 use basic blocks, 50+
    bottlenecks."""
    apply_block = (
        resnet_blocks.apply_bottleneck_block
        if config["depth"] >= 50
        else resnet_blocks.apply_basic_block
    )
    for stage, num_blocks in enumerate(STAGE_BLOCKS[config["depth"]]):
        filters = int(64 * 2**stage * config["width_multiplier"])
        for block in range(num_blocks):
            # SimCLR projects in the first block of every stage, also in
            # stage 1 of ResNet-18/34 where the shapes already match.
            x = apply_block(
                x,
                filters,
                strides=2 if stage > 0 and block == 0 else 1,
                projection=block == 0,
                sk_ratio=config["sk_ratio"],
                name=f"stage{stage + 1}_block{block + 1}",
                bn=bn,
                layout=layout,
            )
    return x


def _validate(depth, width_multiplier, sk_ratio, stem, momentum, epsilon):
    if not is_int(depth) or depth not in STAGE_BLOCKS:
        refuse("depth", f"one of {tuple(STAGE_BLOCKS)}", repr(depth))
    if (
        not isinstance(width_multiplier, numbers.Real)
        or isinstance(width_multiplier, bool)
        or not width_multiplier > 0
        or not float(32 * width_multiplier).is_integer()
    ):
        refuse(
            "width_multiplier",
            "> 0 with 32 * width_multiplier a whole number",
            repr(width_multiplier),
        )
    check_in_range("sk_ratio", sk_ratio, 0, 1, include_high=False)
    check_one_of("stem", stem, STEMS)
    check_in_range("bn_momentum", momentum, 0, 1, include_high=False)
    check_positive("bn_epsilon", epsilon)


def _validate_layout(
    resnet_d, shortcut_pool, conv_padding, pool_padding, mean, std
):
    if resnet_d is not None and not isinstance(resnet_d, bool):
        refuse("resnet_d", "None, True or False", repr(resnet_d))
    check_one_of("shortcut_pool", shortcut_pool, SHORTCUT_POOLS)
    check_one_of("conv_padding", conv_padding, CONV_PADDINGS)
    check_one_of("pool_padding", pool_padding, POOL_PADDINGS)
    if (mean is None) != (std is None):
        refuse("input_std", "given exactly when `input_mean` is", repr(std))
    if mean is not None:
        for name, value in (("input_mean", mean), ("input_std", std)):
            if len(value) != 3:
                refuse(name, "a sequence of 3 floats", repr(value))
        if not all(s > 0 for s in std):
            refuse("input_std", "> 0", repr(std))
