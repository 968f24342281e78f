"""`prepare_images()`: any batch of images as uint8 RGB at one square size."""

import numpy as np
from keras import ops

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import as_uint8_images

_METHODS = ("resize", "pad")


def _as_channels_last_rgb(images, name):
    """`(N, H, W)`, `(N, H, W, 1)`, `(N, H, W, 3)` or `(N, H, W, 4)` as
    `(N, H, W, 3)`: gray is repeated, alpha dropped."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    channels = images.shape[-1] if images.ndim == 4 else None
    if channels not in (1, 3, 4) or min(images.shape[1:3], default=0) < 1:
        raise ValueError(
            f"`{name}` must be images of shape (N, H, W) or (N, H, W, C) "
            f"with C = 1 (gray), 3 (RGB) or 4 (RGBA), channels last. "
            f"Received: {name}.shape={images.shape}"
        )
    if channels == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]


def _pad(images, image_size, name):
    """Nearest-neighbour upsampling by the largest whole factor that fits,
    then zero padding around the centre."""
    height, width = images.shape[1:3]
    if max(height, width) > image_size:
        raise ValueError(
            f"`method='pad'` cannot shrink images: `{name}` is "
            f"{height}x{width} px, larger than image_size={image_size}. "
            "Use method='resize'."
        )
    factor = image_size // max(height, width)
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    pad_h, pad_w = image_size - images.shape[1], image_size - images.shape[2]
    return np.pad(
        images,
        (
            (0, 0),
            (pad_h // 2, pad_h - pad_h // 2),
            (pad_w // 2, pad_w - pad_w // 2),
            (0, 0),
        ),
    )


def _resize(images, image_size, batch_size=1024):
    """Centre-crop to a square and resize (bilinear, antialiased)."""
    out = np.empty((len(images), image_size, image_size, 3), np.uint8)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].astype("float32")
        resized = ops.image.resize(
            chunk,
            (image_size, image_size),
            interpolation="bilinear",
            antialias=True,
            crop_to_aspect_ratio=True,
            data_format="channels_last",
        )
        resized = np.clip(np.round(ops.convert_to_numpy(resized)), 0, 255)
        out[start : start + batch_size] = resized.astype(np.uint8)
    return out


def prepare_images(
    images, image_size: int, method: str = "resize", name: str = "images"
) -> np.ndarray:
    """Converts images of any size and channel count to what models take.

    The recipes (and the models' `fit`) train on uint8 RGB images of one
    square size, channels last. This turns a user's array into that:
    gray `(N, H, W)` or `(N, H, W, 1)` images are repeated to three
    channels, an alpha channel is dropped, floats in [0, 1] and integers
    in [0, 255] become uint8, and the images are brought to
    `image_size × image_size`:

    - `method="resize"`: centre-cropped to a square and resized
      (bilinear, antialiased when shrinking);
    - `method="pad"`: upsampled by the largest whole factor that fits
      (nearest neighbour, so pixels stay sharp) and zero-padded around the
      centre, as the recipes do with the 8×8 digits; it cannot shrink.

    Images already uint8 RGB at the size are returned unchanged.

    Args:
        images: array-like, `(N, H, W)` or `(N, H, W, C)` with `C` 1, 3 or
            4; uint8, integers in [0, 255] or floats in [0, 1].
        image_size: int. Side of the returned images, in pixels.
        method: str. `"resize"` or `"pad"`. Defaults to `"resize"`.
        name: str. The argument's name in error messages. Defaults to
            `"images"`.

    Returns:
        A uint8 NumPy array `(N, image_size, image_size, 3)`.

    Example:
    ```python
    # 28x28 gray digits for a recipe at 32 px.
    x = keras_ssl.data.prepare_images(x_gray_28, image_size=32)
    x.shape  # (N, 32, 32, 3)
    ```
    """
    image_size = check_positive_int("image_size", image_size)
    if method not in _METHODS:
        raise ValueError(
            f"`method` must be one of {_METHODS}. Received: method={method!r}"
        )
    images = as_uint8_images(_as_channels_last_rgb(images, name), name)
    if images.shape[1:3] == (image_size, image_size):
        return images
    if method == "pad":
        return _pad(images, image_size, name)
    return _resize(images, image_size)
