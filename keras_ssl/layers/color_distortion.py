"""SimCLR's colour distortion: jitter in a random order, then grayscale."""

import math

import keras
import numpy as np
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_non_negative
from keras_ssl._checks import check_probability
from keras_ssl.layers._image_augmentation import ImageAugmentation
from keras_ssl.layers.random_resized_crop import to_float_images

# Luma weights of `tf.image.rgb_to_grayscale` (ITU-R BT.601).
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

# RGB -> YIQ (NTSC). A hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.322],
        [0.211, -0.523, 0.312],
    ]
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
# hue_matrix(t) = _HUE_FIXED + cos(t) * _HUE_COS + sin(t) * _HUE_SIN.
_HUE_FIXED = _YIQ_TO_RGB[:, :1] @ _RGB_TO_YIQ[:1]
_HUE_COS = _YIQ_TO_RGB[:, 1:] @ _RGB_TO_YIQ[1:]
_HUE_SIN = _YIQ_TO_RGB[:, 1:] @ np.array([[0.0, -1.0], [1.0, 0.0]])
_HUE_SIN = _HUE_SIN @ _RGB_TO_YIQ[1:]

# Index of each jitter op in a permutation.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def hue_matrices(delta):
    """Per-image RGB matrices that rotate hue by `delta` turns in YIQ space.

    Args:
        delta: float tensor (B,). Hue shift as a fraction of a full turn;
            positive values move red towards yellow, as an HSV hue increase.

    Returns:
        A float32 tensor (B, 3, 3) acting on RGB column vectors.
    """
    # The (I, Q) plane turns the other way round from the HSV hue circle.
    angle = -2.0 * math.pi * ops.cast(delta, "float32")
    cos = ops.cos(angle)[:, None, None]
    sin = ops.sin(angle)[:, None, None]
    fixed = ops.convert_to_tensor(_HUE_FIXED, "float32")
    return (
        fixed
        + cos * ops.convert_to_tensor(_HUE_COS, "float32")
        + sin * ops.convert_to_tensor(_HUE_SIN, "float32")
    )


def _apply_affine(images, matrices, offsets=None, clip=True):
    """`clip(A x + c, 0, 1)` per pixel with a per-image 3x3 `A` and `c`."""
    # Broadcast multiply-adds rather than an einsum: XLA fuses them with the
    # clip into one loop, while a dot with 3x3 operands runs as a slow
    # batched matmul (2x the CPU time at 224 px).
    x = images[..., 0:1] * matrices[:, None, None, :, 0]
    for c in (1, 2):
        x = x + images[..., c : c + 1] * matrices[:, None, None, :, c]
    if offsets is not None:
        x = x + offsets[:, None, None, None]
    return ops.clip(x, 0.0, 1.0) if clip else x


def _op_table(factors):
    """(B, 6, 10): per image, the flattened 3x3 matrix of brightness,
    contrast, saturation, hue (rows `BRIGHTNESS` ... `HUE`), the identity
    (`_IDENTITY`) and the grey projection (`_GRAY`), then in column 9 the
    weight of the mean grey level in the op's offset (`1 - f` for contrast,
    0 for the others)."""
    batch = ops.shape(factors)[0]
    eye = ops.eye(3, dtype="float32")
    to_gray = ops.ones((3, 1), "float32") * ops.convert_to_tensor(
        GRAY_WEIGHTS, "float32"
    )
    f = [ops.reshape(factors[:, i], (-1, 1, 1)) for i in range(3)]
    matrices = ops.stack(
        [
            f[0] * eye,
            f[1] * eye,
            f[2] * eye + (1.0 - f[2]) * to_gray,
            hue_matrices(factors[:, 3]),
            ops.broadcast_to(eye, (batch, 3, 3)),
            ops.broadcast_to(to_gray, (batch, 3, 3)),
        ],
        axis=1,
    )
    contrast = ops.one_hot(ops.full((batch,), CONTRAST, "int32"), 6)
    contrast = contrast * (1.0 - factors[:, 1:2])
    return ops.concatenate(
        [ops.reshape(matrices, (batch, 6, 9)), contrast[:, :, None]], axis=2
    )


# Extra rows of `_op_table`.
_IDENTITY, _GRAY = 4, 5


@keras.saving.register_keras_serializable(package="keras_ssl")
class ColorDistortion(ImageAugmentation):
    """SimCLR's colour distortion, batched, with a random op order per image.

    With probability `p_jitter` an image gets brightness, contrast, saturation
    and hue jitter in a random order of its own (all 24 orders equally
    likely), clipped to [0, 1] after each op; then, with probability
    `p_grayscale`, it is turned to grayscale. With strength `s` the maximum
    adjustments are `0.8 s` (brightness, contrast, saturation) and `0.2 s`
    (hue), as in SimCLR; `brightness`, `contrast`, `saturation` and `hue`
    override them one by one (SemPPL / BYOL use 0.4, 0.4, 0.2, 0.1).

    The ops, each drawn per image with amount `a`:
    - brightness: `x * f`, `f ~ U[max(0, 1 - a), 1 + a]` (multiplicative, as
      SimCLR v2's `color_jitter`; `keras.layers.RandomColorJitter` adds).
    - contrast: `m + f (x - m)`, `f ~ U[max(0, 1 - a), 1 + a]`, with `m` the
      mean grey level of the image (torchvision's `adjust_contrast`;
      `tf.image.adjust_contrast` uses per-channel means instead).
    - saturation: `g + f (x - g)`, `f ~ U[max(0, 1 - a), 1 + a]`, with `g`
      the pixel's grey level (torchvision's `adjust_saturation`).
    - hue: a rotation of the chroma (I, Q) plane of YIQ space by `2 pi d`,
      `d ~ U[-a, a]`. This is the linear counterpart of the HSV hue shift of
      `tf.image.adjust_hue`: it keeps the luma, but does not preserve HSV
      saturation and value exactly.
    Grey levels use the weights of `tf.image.rgb_to_grayscale`
    (0.2989, 0.5870, 0.1140).

    Every op is a per-image affine map of the RGB vector, so each of the four
    slots of the random order costs one batched 3x3 product and a clip,
    whatever op each image applies there: no per-image branches, and it
    compiles with XLA. The image is read twice: once to find the mean grey
    level that contrast blends towards (after the ops before it), once to
    apply every slot.

    Args:
        strength: float >= 0. Colour distortion strength `s`. Defaults to
            `1.0` (SimCLR on ImageNet; SimCLR uses 0.5 on CIFAR-10).
        p_jitter: float in [0, 1]. Probability of the jitter. Defaults to
            `0.8`.
        p_grayscale: float in [0, 1]. Probability of the grayscale
            conversion. Defaults to `0.2`.
        brightness: optional float >= 0. Maximum brightness adjustment.
            Defaults to `None`, meaning `0.8 * strength`.
        contrast: optional float >= 0. Defaults to `None` (`0.8 * strength`).
        saturation: optional float >= 0. Defaults to `None`
            (`0.8 * strength`).
        hue: optional float in [0, 0.5]. Maximum hue shift in turns.
            Defaults to `None` (`0.2 * strength`).
        seed: optional int. Seed of the layer's `SeedGenerator`.
        **kwargs: base `Layer` arguments.

    Input: uint8 or float images (B, H, W, 3) or one image (H, W, 3); float
    images are expected in [0, 1]. Output: float32 in [0, 1], same shape.
    `training=False` only converts to float32 in [0, 1].

    Example:

    ```python
    distort = keras_ssl.layers.ColorDistortion(strength=0.5, seed=0)
    images = np.random.randint(0, 256, (8, 32, 32, 3), dtype="uint8")
    views = distort(images, training=True)
    ```

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), SimCLR,
          Appendix A: "color distortion is composed by color jittering and
          color dropping", jitter applied with probability 0.8, grayscale
          with probability 0.2, brightness, contrast and saturation 0.8s,
          hue 0.2s, in a random order.
    """

    config_args = (
        "strength",
        "p_jitter",
        "p_grayscale",
        "brightness",
        "contrast",
        "saturation",
        "hue",
    )

    def __init__(
        self,
        strength=1.0,
        p_jitter=0.8,
        p_grayscale=0.2,
        brightness=None,
        contrast=None,
        saturation=None,
        hue=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        check_non_negative("strength", strength)
        check_probability("p_jitter", p_jitter)
        check_probability("p_grayscale", p_grayscale)
        for name, amount in [
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ]:
            if amount is not None:
                check_non_negative(name, amount)
        if hue is not None:
            check_in_range("hue", hue, 0, 0.5)
        if hue is None and 0.2 * strength > 0.5:
            raise ValueError(
                "`strength` must be <= 2.5 unless `hue` is given (the hue "
                f"shift 0.2 * strength is at most half a turn). Received: "
                f"strength={strength}"
            )
        self.strength = float(strength)
        self.p_jitter = float(p_jitter)
        self.p_grayscale = float(p_grayscale)
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue

    @property
    def amounts(self):
        """Maximum (brightness, contrast, saturation, hue) adjustments."""
        defaults = (0.8, 0.8, 0.8, 0.2)
        given = (self.brightness, self.contrast, self.saturation, self.hue)
        return tuple(
            float(g) if g is not None else d * self.strength
            for g, d in zip(given, defaults)
        )

    def sample_params(self, batch_size):
        """Draws the per-image jitter order, factors and on/off flags.

        Args:
            batch_size: int or scalar tensor.

        Returns:
            A dict of tensors: `order` int32 (B, 4), the op applied in each
            slot (`BRIGHTNESS=0, CONTRAST=1, SATURATION=2, HUE=3`); `factors`
            float32 (B, 4), the brightness, contrast and saturation factors
            and the hue shift in turns; `jitter` and `grayscale` bool (B,).
        """
        u = keras.random.uniform((batch_size, 10), seed=self.seed_generator)
        # argsort of i.i.d. uniforms is a uniformly random permutation.
        order = ops.cast(ops.argsort(u[:, :4], axis=1), "int32")
        factors = []
        for i, amount in enumerate(self.amounts[:3]):
            low = max(0.0, 1.0 - amount)
            factors.append(low + (1.0 + amount - low) * u[:, 4 + i])
        factors.append(self.amounts[3] * (2.0 * u[:, 7] - 1.0))
        return {
            "order": order,
            "factors": ops.stack(factors, axis=1),
            "jitter": u[:, 8] < self.p_jitter,
            "grayscale": u[:, 9] < self.p_grayscale,
        }

    def distort(self, images, params):
        """Applies the distortion described by `params` to float images.

        Args:
            images: float32 tensor (B, H, W, 3) in [0, 1].
            params: dict from `sample_params`.

        Returns:
            A float32 tensor (B, H, W, 3) in [0, 1].
        """
        factors = ops.cast(params["factors"], "float32")
        jitter = ops.convert_to_tensor(params["jitter"])[:, None]
        # The op of each slot, the identity for images without jitter.
        order = ops.where(jitter, ops.cast(params["order"], "int32"), _IDENTITY)
        # Contrast blends towards the mean grey level of the image that
        # reaches its slot, and each op clips, so that mean needs the ops
        # before it: a first pass applies only those (the identity from
        # the contrast slot on; none when there is no contrast, whose mean
        # is then unused) and reduces; a second pass applies every slot.
        # (Taking a mean at every slot in one pass made XLA recompute the
        # slots before each mean: 2.8x the CPU time at 224 px.)
        is_contrast = ops.cast(order == CONTRAST, "int32")
        slot = ops.argmax(is_contrast, axis=1)[:, None]
        prefix = ops.where(
            ops.arange(3)[None, :] < slot, order[:, :3], _IDENTITY
        )
        last = ops.where(params["grayscale"], _GRAY, _IDENTITY)[:, None]
        picks = ops.concatenate(
            [order, ops.cast(last, "int32"), ops.cast(prefix, "int32")], 1
        )
        # One small dot gives every slot's matrix and contrast weight: XLA
        # keeps a dot's output in memory, while elementwise selects on the
        # random draws were fused into the pixel loops and recomputed for
        # every pixel (1.9x the CPU time).
        table = ops.einsum(
            "bsk,bkn->bsn", ops.one_hot(picks, 6), _op_table(factors)
        )
        matrices = ops.reshape(table[:, :, :9], (-1, 8, 3, 3))
        x = images
        for i in range(5, 8):
            x = _apply_affine(x, matrices[:, i])
        gray = ops.convert_to_tensor(GRAY_WEIGHTS, "float32")
        mean_gray = ops.sum(ops.mean(x, axis=(1, 2)) * gray, axis=-1)
        offsets = table[:, :4, 9] * mean_gray[:, None]
        x = images
        for i in range(4):
            x = _apply_affine(x, matrices[:, i], offsets[:, i])
        # Grey levels of values in [0, 1] stay in [0, 1]: no clip.
        return _apply_affine(x, matrices[:, 4], clip=False)

    def augment(self, images, training):
        outputs = to_float_images(images)
        if training:
            params = self.sample_params(ops.shape(outputs)[0])
            outputs = self.distort(outputs, params)
        return outputs
