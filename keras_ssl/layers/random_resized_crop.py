"""Inception-style random resized crop with a horizontal flip, batched."""

import math

import keras
from keras import ops

from keras_ssl._checks import check_aspect_ratio
from keras_ssl._checks import check_crop_scale
from keras_ssl._checks import check_in_range
from keras_ssl.layers._image_augmentation import ImageAugmentation

# torchvision's RandomResizedCrop also tries 10 windows before falling back.
_NUM_CANDIDATES = 10


def to_float_images(images):
    """Casts images to float32 in [0, 1]; integer images are divided by 255.

    Float images are assumed to be in [0, 1] already and are only cast.

    Args:
        images: tensor. Images of any dtype.

    Returns:
        A float32 tensor of the same shape.
    """
    dtype = keras.backend.standardize_dtype(images.dtype)
    if "int" in dtype:
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


def normalize_size(size, name="size"):
    """Returns `size` as a `(height, width)` tuple of positive ints.

    Args:
        size: int or tuple of two ints.
        name: str. Argument name used in the error message.

    Returns:
        A tuple `(height, width)`.
    """
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in pair
    ):
        raise ValueError(
            f"`{name}` must be an int >= 1 or a tuple of two such ints. "
            f"Received: {name}={size}"
        )
    return pair


def _sample_grid(start, end, num, length, flip=None):
    """Bilinear taps along one axis for `num` samples of [start, end].

    Output sample `i` sits at the centre of the i-th of `num` equal cells of
    the window (half-pixel centres, as `tf.image.resize`), mapped to input
    pixel coordinates and clamped to the image, so taps never leave it.

    Returns:
        `(index0, index1, weight1)`, each (B, num): the two input pixels and
        the weight of the second one.
    """
    t = (ops.arange(num, dtype="float32") + 0.5) / num
    t = ops.broadcast_to(t[None, :], (ops.shape(start)[0], num))
    if flip is not None:
        t = ops.where(flip[:, None], 1.0 - t, t)
    length_f = ops.cast(length, "float32")
    pos = (start[:, None] + (end - start)[:, None] * t) * length_f - 0.5
    pos = ops.clip(pos, 0.0, length_f - 1.0)
    index0 = ops.floor(pos)
    weight1 = pos - index0
    index0 = ops.cast(index0, "int32")
    index1 = ops.minimum(index0 + 1, ops.cast(length, "int32") - 1)
    return index0, index1, weight1


def _gather_rows(images, index0, index1, weight1):
    """Interpolates along axis 1 of (B, L, M, C) `images` at per-row taps.

    The gather is a plain row gather from a (B * L, M * C) matrix: each tap
    copies one contiguous image row, the fastest gather on every backend.

    Returns:
        A float32 tensor (B, num, M * C).
    """
    shape = ops.shape(images)
    batch, length = shape[0], shape[1]
    flat = ops.reshape(images, (-1, shape[2] * shape[3]))
    offset = (ops.arange(batch, dtype="int32") * length)[:, None]
    rows0 = ops.cast(ops.take(flat, index0 + offset, axis=0), "float32")
    rows1 = ops.cast(ops.take(flat, index1 + offset, axis=0), "float32")
    return rows0 + (rows1 - rows0) * weight1[:, :, None]


def crop_and_resize(images, boxes, size, flip=None):
    """Crops a box from each image and resizes it bilinearly to `size`.

    Unlike `tf.image.crop_and_resize` this uses half-pixel centres (output
    pixel `i` samples the centre of the i-th of `size` equal cells of the box,
    like `tf.image.resize`), works on every Keras backend and compiles with
    XLA. It is separable: rows are gathered and blended first, then columns.
    No antialiasing is applied when shrinking.

    Args:
        images: tensor (B, H, W, C), any dtype. Integer images are divided by
            255 after the resize.
        boxes: float tensor (B, 4). `[y0, x0, y1, x1]` per image, as
            fractions of the image height and width.
        size: int or tuple `(height, width)`. Output size.
        flip: optional bool tensor (B,). Mirror the crop horizontally.

    Returns:
        A float32 tensor (B, height, width, C).
    """
    out_h, out_w = normalize_size(size)
    shape = ops.shape(images)
    batch, width, channels = shape[0], shape[2], shape[3]
    boxes = ops.cast(boxes, "float32")
    # Rows first: a row of the (uint8) input is one contiguous copy.
    taps = _sample_grid(boxes[:, 0], boxes[:, 2], out_h, shape[1])
    rows = _gather_rows(images, *taps)  # (B, out_h, W * C)
    # Then columns, as a gather along the last axis of each row: pixel j's
    # channel c comes from element x * C + c of the row (no transposes,
    # which cost 1.2x the CPU time).
    index0, index1, weight1 = _sample_grid(
        boxes[:, 1], boxes[:, 3], out_w, width, flip
    )
    offsets = ops.arange(channels, dtype="int32")

    def columns(index):
        index = index[:, :, None] * channels + offsets
        index = ops.reshape(index, (batch, 1, -1))
        index = ops.broadcast_to(index, (batch, out_h, out_w * channels))
        return ops.take_along_axis(rows, index, axis=2)

    weight1 = ops.repeat(weight1, channels, axis=1)[:, None, :]
    left = columns(index0)
    x = left + (columns(index1) - left) * weight1
    x = ops.reshape(x, (-1, out_h, out_w, channels))
    # Divided by a tensor, not by a constant (which XLA turns into a
    # product): XLA's CPU compiler fuses no division into a consumer that
    # reads each element several times, such as the colour distortion's
    # channel mixing, so the resize is computed once and kept in memory
    # instead of being recomputed inside every colour pass (1.6x less CPU
    # time for crop + colour at 224 px). The divisor is exactly 255 (or 1):
    # the weights are below 1.
    dtype = keras.backend.standardize_dtype(images.dtype)
    scale = ops.maximum(
        ops.max(taps[2], axis=1), 255.0 if "int" in dtype else 1.0
    )
    return x / scale[:, None, None, None]


def center_box(height, width, size, proportion):
    """The eval-time centre crop box of SimCLR's `center_crop`.

    The largest centred window with the aspect ratio of `size`, scaled by
    `proportion` in each dimension.

    Args:
        height: int or scalar tensor. Image height.
        width: int or scalar tensor. Image width.
        size: tuple `(height, width)`. Output size.
        proportion: float in (0, 1].

    Returns:
        A float32 tensor (4,) `[y0, x0, y1, x1]` in fractions of the image.
    """
    aspect = size[1] / size[0]
    image_aspect = ops.cast(width, "float32") / ops.cast(height, "float32")
    box_h = proportion * ops.minimum(1.0, image_aspect / aspect)
    box_w = proportion * ops.minimum(1.0, aspect / image_aspect)
    y0 = (1.0 - box_h) / 2.0
    x0 = (1.0 - box_w) / 2.0
    return ops.stack([y0, x0, y0 + box_h, x0 + box_w])


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomResizedCrop(ImageAugmentation):
    """Inception-style random crop, resized to `size`, with a random flip.

    Each image gets its own window: the area fraction is drawn uniformly from
    `scale` and the aspect ratio (width / height) log-uniformly from `ratio`;
    the window is placed uniformly inside the image, resized bilinearly to
    `size` and mirrored horizontally with probability 0.5 when `flip` is on.
    The whole batch is cropped by one gather-based bilinear sampler (no
    `tf.image`), so the layer runs inside a jit-compiled train step on every
    backend, and also in `tf.data` on the TensorFlow backend.

    Ten candidate windows are drawn per image and the first that fits inside
    the image is used (torchvision tries 10 times too; a vectorised draw
    instead of a loop keeps shapes static). When none fits (only likely when
    `scale` reaches near 1 on an image far from square), the window falls
    back, as torchvision's, to the largest one whose aspect ratio is in
    `ratio`: the whole image when its own aspect ratio is in range. Its area
    can then exceed `scale[1]` only if `scale[1] < 1`, where candidates
    almost never fail.

    With `training=False` the layer is deterministic: SimCLR's evaluation
    centre crop, the largest centred window with the aspect ratio of `size`
    scaled by `eval_crop_proportion` (SimCLR uses 0.875 on ImageNet), resized
    to `size`. With the default `eval_crop_proportion=1.0` and `size` equal to
    the input size, it is the identity (apart from the conversion to
    float32 in [0, 1]).

    Args:
        size: int or tuple `(height, width)`. Output size.
        scale: tuple of two floats. Range of the crop's area as a fraction of
            the image area, `0 < min <= max <= 1`. Defaults to `(0.08, 1.0)`
            (SimCLR).
        ratio: tuple of two floats. Range of the aspect ratio (width /
            height), `0 < min <= max`. Defaults to `(3/4, 4/3)`.
        flip: bool. Whether to flip horizontally with probability 0.5.
            Defaults to `True`.
        eval_crop_proportion: float in (0, 1]. Centre-crop proportion used
            when `training=False`. Defaults to `1.0`.
        seed: optional int. Seed of the layer's `SeedGenerator`.
        **kwargs: base `Layer` arguments.

    Input: uint8 or float images (B, H, W, C) or one image (H, W, C); float
    images are expected in [0, 1]. Output: float32 (B, height, width, C) in
    [0, 1].

    Example:

    ```python
    crop = keras_ssl.layers.RandomResizedCrop(224, seed=0)
    images = np.random.randint(0, 256, (8, 256, 256, 3), dtype="uint8")
    views = crop(images, training=True)  # (8, 224, 224, 3) float32
    ```

    References:
        - [Szegedy et al., 2015](https://arxiv.org/abs/1409.4842), Going
          deeper with convolutions (the crop).
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), SimCLR,
          Appendix A: "random crop (with flip and resize)", area uniform in
          [0.08, 1.0], aspect ratio in [3/4, 4/3].
    """

    config_args = ("size", "scale", "ratio", "flip", "eval_crop_proportion")

    def __init__(
        self,
        size,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        flip=True,
        eval_crop_proportion=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.size = normalize_size(size)
        scale = check_crop_scale("scale", scale)
        ratio = check_aspect_ratio("ratio", ratio)
        check_in_range(
            "eval_crop_proportion",
            eval_crop_proportion,
            0,
            1,
            include_low=False,
        )
        self.scale = scale
        self.ratio = ratio
        self.flip = bool(flip)
        self.eval_crop_proportion = float(eval_crop_proportion)

    def sample_boxes(self, batch_size, height, width):
        """Draws one crop window and flip per image.

        Args:
            batch_size: int or scalar tensor.
            height: int or scalar tensor. Image height in pixels.
            width: int or scalar tensor. Image width in pixels.

        Returns:
            `(boxes, flips)`: float32 (B, 4) `[y0, x0, y1, x1]` in fractions
            of the image, and bool (B,).
        """
        k = _NUM_CANDIDATES
        u = keras.random.uniform(
            (batch_size, 2 * k + 3), seed=self.seed_generator
        )
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, :k]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = ops.exp(log_lo + (log_hi - log_lo) * u[:, k : 2 * k])
        # Aspect ratio in pixels -> in fractions of a (height, width) image.
        image_aspect = ops.cast(height, "float32") / ops.cast(width, "float32")
        box_w = ops.sqrt(area * aspect * image_aspect)
        box_h = ops.sqrt(area / aspect / image_aspect)
        fits = ops.logical_and(box_w <= 1.0, box_h <= 1.0)
        first = ops.argmax(ops.cast(fits, "int32"), axis=1)
        pick = ops.one_hot(first, k)
        # Fallback: the largest window with an aspect ratio in `ratio`.
        width_aspect = 1.0 / image_aspect
        fallback = ops.clip(width_aspect, self.ratio[0], self.ratio[1])
        fallback_w = ops.minimum(1.0, fallback / width_aspect)
        fallback_h = ops.minimum(1.0, width_aspect / fallback)
        any_fits = ops.any(fits, axis=1)
        box_h = ops.where(any_fits, ops.sum(pick * box_h, axis=1), fallback_h)
        box_w = ops.where(any_fits, ops.sum(pick * box_w, axis=1), fallback_w)
        y0 = u[:, 2 * k] * (1.0 - box_h)
        x0 = u[:, 2 * k + 1] * (1.0 - box_w)
        boxes = ops.stack([y0, x0, y0 + box_h, x0 + box_w], axis=1)
        flips = u[:, 2 * k + 2] < (0.5 if self.flip else 0.0)
        return boxes, flips

    def augment(self, images, training):
        shape = ops.shape(images)
        if training:
            boxes, flips = self.sample_boxes(shape[0], shape[1], shape[2])
            outputs = crop_and_resize(images, boxes, self.size, flips)
        elif self.eval_crop_proportion == 1.0 and (
            tuple(images.shape[1:3]) == self.size
        ):
            outputs = to_float_images(images)
        else:
            box = center_box(
                shape[1], shape[2], self.size, self.eval_crop_proportion
            )
            boxes = ops.broadcast_to(box[None, :], (shape[0], 4))
            outputs = crop_and_resize(images, boxes, self.size)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + self.size + (input_shape[-1],)
