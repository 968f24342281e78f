"""SimCLR's random Gaussian blur with a per-image sigma, batched."""

import math

import keras
import numpy as np
from keras import ops

from keras_ssl._checks import check_aspect_ratio
from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_probability
from keras_ssl.layers._image_augmentation import ImageAugmentation
from keras_ssl.layers.random_resized_crop import to_float_images


def kernel_radius(side, kernel_fraction):
    """SimCLR's kernel radius: `(side * kernel_fraction) // 2`, as an int.

    SimCLR takes `kernel_size = side // 10`, `radius = kernel_size // 2` and
    a kernel of `2 * radius + 1` taps: 23 taps at 224 px, 3 at 32 px.
    """
    # The epsilon keeps e.g. 30 * 0.1 = 3.0000000000000004 and
    # 20 * 0.1 = 2.0 both rounding the intended way.
    return int(side * kernel_fraction + 1e-6) // 2


def gaussian_kernel(sigma, radius):
    """Normalised 1-D Gaussian kernels, one per image.

    Args:
        sigma: float tensor (B,). Standard deviations in pixels.
        radius: int. The kernel has `2 * radius + 1` taps.

    Returns:
        A float32 tensor (B, 2 * radius + 1) whose rows sum to 1.
    """
    taps = ops.arange(-radius, radius + 1, dtype="float32")
    sigma = ops.cast(sigma, "float32")[:, None]
    weights = ops.exp(-(taps[None, :] ** 2) / (2.0 * sigma**2))
    return weights / ops.sum(weights, axis=1, keepdims=True)


def _reflect_index(length, radius):
    """Indices of `length` samples padded by `radius` on each side, by
    reflection (`np.pad(..., mode="reflect")`), as an int32 vector."""
    index = np.arange(-radius, length + radius)
    index = np.abs(index)
    index = np.where(index >= length, 2 * (length - 1) - index, index)
    return ops.convert_to_tensor(index.astype("int32"))


def _blur_padded(padded, weights, radius, length, step):
    """Blurs (N, L, M) `padded` along axis 1 (`step=None`) or along axis 2,
    where taps are `step` elements apart; the axis is padded by `radius`
    taps on each side and `length` samples long once blurred.

    Every shifted copy is a contiguous slice, so XLA fuses the taps into
    one loop. `weights` (N, 2 * radius + 1) are per-image kernels.
    """
    size = length * (step or 1)

    def shifted(k):
        begin = (radius + k) * (step or 1)
        if step is None:
            return padded[:, begin : begin + length]
        return padded[:, :, begin : begin + size]

    weights = weights[:, :, None, None]
    # The kernel is symmetric: pairing the taps at +k and -k does half the
    # multiplications (1.4x less CPU time at 224 px).
    out = weights[:, radius] * shifted(0)
    for k in range(1, radius + 1):
        out = out + weights[:, radius + k] * (shifted(k) + shifted(-k))
    return out


def _blur_padded_images(padded, sigma, radius_h, radius_w, width):
    """Blurs (N, H + 2 r_h, (W + 2 r_w) * C) `padded` images, padded by
    `radius_h` rows and `radius_w` columns on each side, to (N, H, W * C).
    """
    channels = padded.shape[2] // (width + 2 * radius_w)
    height = padded.shape[1] - 2 * radius_h
    x = padded
    if radius_h > 0:
        weights = gaussian_kernel(sigma, radius_h)
        x = _blur_padded(x, weights, radius_h, height, None)
    if radius_w > 0:
        weights = gaussian_kernel(sigma, radius_w)
        x = _blur_padded(x, weights, radius_w, width, channels)
    return x


def gaussian_blur(images, sigma, kernel_fraction=0.1):
    """Blurs each image with its own separable Gaussian kernel.

    Borders are padded by reflection (SimCLR's `depthwise_conv2d` pads with
    zeros, which darkens the border).

    Args:
        images: float tensor (B, H, W, C).
        sigma: float tensor (B,). Standard deviation of each image's kernel.
        kernel_fraction: float. The kernel covers about this fraction of
            the image side along each axis.

    Returns:
        A float32 tensor (B, H, W, C).
    """
    x = ops.cast(images, "float32")
    _, height, width, channels = x.shape
    radius_h = kernel_radius(height, kernel_fraction)
    radius_w = kernel_radius(width, kernel_fraction)
    pad = [[0, 0], [radius_h, radius_h], [radius_w, radius_w], [0, 0]]
    x = ops.pad(x, pad, mode="reflect")
    x = ops.reshape(
        x, (-1, height + 2 * radius_h, (width + 2 * radius_w) * channels)
    )
    x = _blur_padded_images(x, sigma, radius_h, radius_w, width)
    return ops.reshape(x, (-1, height, width, channels))


def _capacity(batch_size, p):
    """Images blurred per loop step: the mean count plus 3 std, at most B."""
    std = math.sqrt(batch_size * p * (1.0 - p))
    return min(batch_size, math.ceil(batch_size * p + 3.0 * std) + 1)


def blur_selected(images, sigma, apply, kernel_fraction=0.1, capacity=None):
    """Blurs the images where `apply` is true; the others pass unchanged.

    The selected images are put first, and a loop blurs `capacity` images
    per step until every selected image is done: one step when their count
    fits (the default capacity of `RandomGaussianBlur` is the expected
    count plus three standard deviations), so the cost follows the number
    of blurred images rather than the batch size. Shapes stay static (the
    trip count is data-dependent), so it compiles with XLA; the loop also
    makes XLA materialise the input once instead of recomputing it for
    every kernel tap.

    Args:
        images: float tensor (B, H, W, C).
        sigma: float tensor (B,). Standard deviation per image.
        apply: bool tensor (B,). Which images to blur.
        kernel_fraction: float. See `gaussian_blur`.
        capacity: optional int. Images blurred per loop step. Defaults to
            `None`, the whole batch (one step).

    Returns:
        A float32 tensor (B, H, W, C).
    """
    images = ops.cast(images, "float32")
    batch_size, height, width, channels = images.shape
    if batch_size is None:
        blurred = gaussian_blur(images, sigma, kernel_fraction)
        return ops.where(apply[:, None, None, None], blurred, images)
    capacity = batch_size if capacity is None else min(capacity, batch_size)
    radius_h = kernel_radius(height, kernel_fraction)
    radius_w = kernel_radius(width, kernel_fraction)
    sigma = ops.cast(sigma, "float32")
    count = ops.sum(ops.cast(apply, "int32"))
    steps = (count + capacity - 1) // capacity
    # Indices of the selected images first, each group in batch order, and
    # each image's place in that order.
    positions = ops.arange(batch_size, dtype="int32")
    order = ops.argsort(ops.where(apply, 0, batch_size) + positions)
    order = ops.cast(order, "int32")
    rank = ops.cast(ops.argsort(order), "int32")
    # Pixel (r, c) of image i is row (i * H + r) * W + c of the batch as a
    # (B * H * W, C) matrix.
    pixels = (
        _reflect_index(height, radius_h)[:, None] * width
        + _reflect_index(width, radius_w)[None, :]
    )
    padded_shape = (
        capacity,
        height + 2 * radius_h,
        (width + 2 * radius_w) * channels,
    )

    def step(i, x):
        # The last step may start earlier to stay inside the batch; the
        # images before `i * capacity` were blurred by the previous step.
        start = ops.minimum(i * capacity, batch_size - capacity)
        index = ops.slice(order, (start,), (capacity,))
        # Gathering each image's pixels in reflected order pads it for both
        # passes in the copy that collects the chunk (1.35x less CPU time
        # than padding each pass).
        padded = ops.take(
            ops.reshape(x, (-1, channels)),
            index[:, None, None] * (height * width) + pixels[None],
            axis=0,
        )
        padded = ops.reshape(padded, padded_shape)
        blurred = _blur_padded_images(
            padded, ops.take(sigma, index), radius_h, radius_w, width
        )
        # Write back with one gather from [blurred chunk; batch]: image j
        # takes its blurred copy when this step blurs it. (A scatter into
        # the batch cost 1.3x the CPU time; writing image by image in a
        # loop saved 2% of a whole view on a CPU but would cost a kernel
        # launch per image on a GPU.)
        done = ops.logical_and(rank >= i * capacity, rank < count)
        done = ops.logical_and(done, rank < start + capacity)
        source = ops.where(done, rank - start, capacity + positions)
        both = ops.concatenate(
            [
                ops.reshape(blurred, (capacity, -1)),
                ops.reshape(x, (batch_size, -1)),
            ],
            axis=0,
        )
        return ops.reshape(ops.take(both, source, axis=0), x.shape)

    return ops.fori_loop(0, steps, step, images)


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomGaussianBlur(ImageAugmentation):
    """SimCLR's Gaussian blur, applied to each image with probability `p`.

    Each image draws its own standard deviation from `sigma` (uniform) and is
    blurred with probability `p` by a separable Gaussian kernel of
    `2 * ((side * kernel_fraction) // 2) + 1` taps per axis (23 at 224 px;
    at 18 px the kernel has a single tap and the blur is the identity).
    Borders are padded by reflection. Only the images that draw the blur are
    blurred: they are gathered into a chunk of static size (the expected
    count plus three standard deviations; a rare larger count takes another
    loop step, see `blur_selected`), so the cost follows the number of
    blurred images and the layer compiles with XLA on every backend.

    Args:
        p: float in [0, 1]. Probability of blurring an image. Defaults to
            `0.5` (SimCLR).
        sigma: tuple of two floats, `0 < min <= max`. Range of the standard
            deviation in pixels. Defaults to `(0.1, 2.0)`.
        kernel_fraction: float in (0, 1]. Kernel size as a fraction of the
            image side. Defaults to `0.1`.
        seed: optional int. Seed of the layer's `SeedGenerator`.
        **kwargs: base `Layer` arguments.

    Input: uint8 or float images (B, H, W, C) or one image (H, W, C); float
    images are expected in [0, 1]. Output: float32, same shape.
    `training=False` only converts to float32 in [0, 1].

    Example:

    ```python
    blur = keras_ssl.layers.RandomGaussianBlur(p=0.5, seed=0)
    images = np.random.uniform(size=(8, 64, 64, 3)).astype("float32")
    blurred = blur(images, training=True)
    ```

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), SimCLR,
          Appendix A: "We blur the image 50% of the time using a Gaussian
          kernel. We randomly sample sigma in [0.1, 2.0], and the kernel size
          is set to be 10% of the image height/width."
    """

    config_args = ("p", "sigma", "kernel_fraction")

    def __init__(
        self,
        p=0.5,
        sigma=(0.1, 2.0),
        kernel_fraction=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        check_probability("p", p)
        check_in_range(
            "kernel_fraction", kernel_fraction, 0, 1, include_low=False
        )
        self.p = float(p)
        self.sigma = check_aspect_ratio("sigma", sigma)
        self.kernel_fraction = float(kernel_fraction)

    def sample_params(self, batch_size):
        """Draws each image's sigma and whether it is blurred.

        Args:
            batch_size: int or scalar tensor.

        Returns:
            `(sigma, apply)`: float32 (B,) and bool (B,).
        """
        u = keras.random.uniform((batch_size, 2), seed=self.seed_generator)
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[:, 0]
        return sigma, u[:, 1] < self.p

    def augment(self, images, training):
        outputs = to_float_images(images)
        if training and self.p > 0.0:
            batch_size = outputs.shape[0]
            sigma, apply = self.sample_params(ops.shape(outputs)[0])
            capacity = None
            if batch_size is not None:
                capacity = _capacity(batch_size, self.p)
            outputs = blur_selected(
                outputs, sigma, apply, self.kernel_fraction, capacity
            )
        return outputs
