"""Private building blocks of `keras_ssl.backbones.ResNet`.

Functions here apply one piece of the network to a symbolic tensor and name
every layer after its place in the network (`stage2_block1_conv1`), so that
variable paths read like `stage2_block1_conv1/kernel`. The only layer class
is `SelectiveKernelAttention`, the part of a SimCLRv2 selective kernel conv
that cannot be written with stock Keras layers.
"""

import keras
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl.layers.fused_batch_normalization import batch_normalization

# SimCLR initialises every conv with `VarianceScaling()` (scale 1, fan-in,
# truncated normal) and never uses conv biases: each conv feeds a BN.
CONV_INITIALIZER = "variance_scaling"


def batch_norm(name, config, zero_init=False, dtype=None):
    """A BatchNormalization layer configured from `config`.

    Args:
        name: str. Layer name.
        config: dict with `momentum`, `epsilon` and `synchronized`.
        zero_init: bool. Initialise gamma to zero, so that a residual branch
            starts as the identity (SimCLR's `init_zero` on the last BN of
            each block).
        dtype: optional dtype policy of the layer.

    Returns:
        A `keras.layers.BatchNormalization`.
    """
    return batch_normalization(
        synchronized=config["synchronized"],
        momentum=config["momentum"],
        epsilon=config["epsilon"],
        gamma_initializer="zeros" if zero_init else "ones",
        name=name,
        dtype=dtype,
    )


def conv_bn(
    x,
    filters,
    kernel_size,
    strides,
    name,
    bn,
    index="",
    relu=True,
    padding="symmetric",
    **bn_args,
):
    """Conv (no bias, fixed padding) + BN (+ ReLU): `{name}_conv{index}` etc.

    With `padding="symmetric"`, strided convs pad explicitly and
    symmetrically, then convolve with `"valid"` padding (SimCLR's
    `conv2d_fixed_padding`, and PyTorch's `padding=k // 2`): this makes the
    output independent of whether the input size is even or odd, unlike
    `"same"` (TensorFlow's and Haiku's rule), which pads more on the
    bottom/right for even sizes.
    """
    if strides > 1 and padding == "symmetric":
        pad_total = kernel_size - 1
        pad_beg = pad_total // 2
        pad = (pad_beg, pad_total - pad_beg)
        x = keras.layers.ZeroPadding2D((pad, pad), name=f"{name}_pad{index}")(x)
        padding = "valid"
    else:
        padding = "same"
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INITIALIZER,
        name=f"{name}_conv{index}",
    )(x)
    x = batch_norm(f"{name}_bn{index}", bn, **bn_args)(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def apply_stem(x, stem, width_multiplier, deep, bn, layout=None):
    """The layers before the first residual stage.

    `"cifar"`: one 3x3/1 conv. `"imagenet"`: a 7x7/2 conv, or with `deep`
    the ResNet-D stem of three 3x3 convs (the first one strided), then a
    3x3/2 max-pool. `layout` holds `conv_padding` and `pool_padding` (see
    `ResNet`).
    """
    layout = layout or {}
    padding = layout.get("conv_padding", "symmetric")
    width = int(64 * width_multiplier)
    if stem == "cifar":
        return conv_bn(x, width, 3, 1, "stem", bn, index=1, padding=padding)
    if deep:
        x = conv_bn(x, width // 2, 3, 2, "stem", bn, index=1, padding=padding)
        x = conv_bn(x, width // 2, 3, 1, "stem", bn, index=2, padding=padding)
        x = conv_bn(x, width, 3, 1, "stem", bn, index=3, padding=padding)
    else:
        x = conv_bn(x, width, 7, 2, "stem", bn, index=1, padding=padding)
    if layout.get("pool_padding", "same") == "symmetric":
        # PyTorch's `MaxPool2d(3, 2, padding=1)` pads one row/column on
        # every side with -inf. The input is a ReLU output (>= 0) and every
        # window holds at least one real value, so zeros pad alike.
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        return keras.layers.MaxPooling2D(
            3, strides=2, padding="valid", name="stem_pool"
        )(x)
    return keras.layers.MaxPooling2D(
        3, strides=2, padding="same", name="stem_pool"
    )(x)


def apply_shortcut(x, filters, strides, layout, name, bn):
    """Projection shortcut: 1x1 conv + BN, or ResNet-D's pool + 1x1 conv.

    ResNet-D (He et al. 2019, Fig. 2c) moves the downsampling of a strided
    shortcut to a 2x2/2 average pool, so that the 1x1 conv no longer drops
    three quarters of its input. With `layout["shortcut_pool"] == "all"`
    a stride-1 projection shortcut also average-pools, 2x2/1 with `"same"`
    padding (the mean of the window's pixels inside the image), as
    SimCLR's code does in the first block of stage 1.
    """
    if layout["resnet_d"] and strides > 1:
        x = keras.layers.ZeroPadding2D(
            ((0, 1), (0, 1)), name=f"{name}_shortcut_pad"
        )(x)
        x = keras.layers.AveragePooling2D(
            2, strides=2, padding="valid", name=f"{name}_shortcut_pool"
        )(x)
        strides = 1
    elif layout["resnet_d"] and layout["shortcut_pool"] == "all":
        x = keras.layers.AveragePooling2D(
            2, strides=1, padding="same", name=f"{name}_shortcut_pool"
        )(x)
    return conv_bn(
        x,
        filters,
        1,
        strides,
        f"{name}_shortcut",
        bn,
        relu=False,
        padding=layout["conv_padding"],
    )


def apply_sk_conv(x, filters, strides, sk_ratio, name, bn, index, padding):
    """SimCLRv2's selective kernel conv in place of a 3x3 conv + BN + ReLU.

    One 3x3 conv makes both branches at once (`2 * filters` channels, BN,
    ReLU); `SelectiveKernelAttention` then mixes the two halves.
    """
    x = conv_bn(
        x, 2 * filters, 3, strides, name, bn, index=index, padding=padding
    )
    return SelectiveKernelAttention(
        sk_ratio=sk_ratio,
        bn_momentum=bn["momentum"],
        bn_epsilon=bn["epsilon"],
        synchronized_bn=bn["synchronized"],
        name=f"{name}_sk{index}",
    )(x)


def apply_3x3(x, filters, strides, sk_ratio, name, bn, index, padding):
    """A 3x3 conv + BN + ReLU, or a selective kernel conv if `sk_ratio`."""
    if sk_ratio > 0:
        return apply_sk_conv(
            x, filters, strides, sk_ratio, name, bn, index, padding
        )
    return conv_bn(
        x, filters, 3, strides, name, bn, index=index, padding=padding
    )


def default_layout(sk_ratio):
    """The layout options of `ResNet`'s defaults for this `sk_ratio`."""
    return {
        "resnet_d": sk_ratio > 0,
        "shortcut_pool": "strided",
        "conv_padding": "symmetric",
    }


def apply_basic_block(
    x, filters, strides, projection, sk_ratio, name, bn, layout=None
):
    """Two 3x3 convs (the first one strided, SK if `sk_ratio`)."""
    layout = layout or default_layout(sk_ratio)
    padding = layout["conv_padding"]
    shortcut = _shortcut(x, filters, strides, projection, layout, name, bn)
    x = apply_3x3(x, filters, strides, sk_ratio, name, bn, 1, padding)
    x = conv_bn(
        x,
        filters,
        3,
        1,
        name,
        bn,
        index=2,
        relu=False,
        zero_init=True,
        padding=padding,
    )
    return _add_and_relu(shortcut, x, name)


def apply_bottleneck_block(
    x, filters, strides, projection, sk_ratio, name, bn, layout=None
):
    """1x1 reduce, 3x3 (or SK) with the stride, 1x1 expand to `4*filters`."""
    layout = layout or default_layout(sk_ratio)
    padding = layout["conv_padding"]
    shortcut = _shortcut(x, 4 * filters, strides, projection, layout, name, bn)
    x = conv_bn(x, filters, 1, 1, name, bn, index=1)
    x = apply_3x3(x, filters, strides, sk_ratio, name, bn, 2, padding)
    x = conv_bn(
        x, 4 * filters, 1, 1, name, bn, index=3, relu=False, zero_init=True
    )
    return _add_and_relu(shortcut, x, name)


def _shortcut(x, filters, strides, projection, layout, name, bn):
    """A block's shortcut: projected in a stage's first block, else `x`."""
    if not projection:
        return x
    return apply_shortcut(x, filters, strides, layout, name, bn)


def _add_and_relu(shortcut, x, name):
    """The end of every residual block: `relu(shortcut + x)`."""
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


@keras.saving.register_keras_serializable(package="keras_ssl")
class SelectiveKernelAttention(keras.layers.Layer):
    """Mixes the two branches of a selective kernel conv (SimCLRv2).

    The input holds both branches side by side on the channel axis
    (`2 * filters` channels). The global descriptor is the spatial mean of
    the branch sum; a 1x1 conv to `max(int(filters * sk_ratio), min_dim)`
    channels + BN + ReLU and a 1x1 conv back to `2 * filters` give one logit
    per branch and channel; a softmax over the two branches weights their
    sum.

    Args:
        sk_ratio: float in (0, 1). Width of the descriptor relative to
            `filters`.
        min_dim: int. Lower bound on the descriptor width. Defaults to `32`.
        bn_momentum: float. Defaults to `0.9`.
        bn_epsilon: float. Defaults to `1e-5`.
        synchronized_bn: bool. See `keras_ssl.backbones.ResNet`.
            Defaults to `False`.

    Returns:
        A tensor of shape `(B, H, W, filters)`.

    References:
        - [Li et al., 2019](https://arxiv.org/abs/1903.06586) (SKNet).
        - [Chen et al., 2020](https://arxiv.org/abs/2006.10029) (SimCLRv2).
    """

    def __init__(
        self,
        sk_ratio,
        min_dim=32,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        synchronized_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_in_range(
            "sk_ratio", sk_ratio, 0, 1, include_low=False, include_high=False
        )
        self.sk_ratio = sk_ratio
        self.min_dim = min_dim
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.synchronized_bn = synchronized_bn

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % 2:
            raise ValueError(
                "The input of `SelectiveKernelAttention` must have an even, "
                f"known number of channels. Received: shape={input_shape}"
            )
        filters = channels // 2
        mid_dim = max(int(filters * self.sk_ratio), self.min_dim)
        bn = {
            "momentum": self.bn_momentum,
            "epsilon": self.bn_epsilon,
            "synchronized": self.synchronized_bn,
        }
        self.reduce_conv = self._conv_1x1(mid_dim, "reduce_conv")
        # The sublayers follow this layer's dtype policy (mixed precision).
        self.reduce_bn = batch_norm("reduce_bn", bn, dtype=self.dtype_policy)
        self.expand_conv = self._conv_1x1(channels, "expand_conv")
        descriptor_shape = (input_shape[0], 1, 1, filters)
        self.reduce_conv.build(descriptor_shape)
        reduced_shape = (input_shape[0], 1, 1, mid_dim)
        self.reduce_bn.build(reduced_shape)
        self.expand_conv.build(reduced_shape)

    def _conv_1x1(self, filters, name):
        return keras.layers.Conv2D(
            filters,
            1,
            use_bias=False,
            kernel_initializer=CONV_INITIALIZER,
            name=name,
            dtype=self.dtype_policy,
        )

    def call(self, inputs, training=None):
        a, b = ops.split(inputs, 2, axis=-1)
        descriptor = ops.mean(a + b, axis=(1, 2), keepdims=True)
        z = self.reduce_conv(descriptor)
        z = ops.relu(self.reduce_bn(z, training=training))
        logits_a, logits_b = ops.split(self.expand_conv(z), 2, axis=-1)
        # softmax over two branches = sigmoid of the logit difference.
        weight_a = ops.sigmoid(logits_a - logits_b)
        return b + weight_a * (a - b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sk_ratio": self.sk_ratio,
                "min_dim": self.min_dim,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "synchronized_bn": self.synchronized_bn,
            }
        )
        return config
