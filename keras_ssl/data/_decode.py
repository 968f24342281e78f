"""Reading and decode-and-crop of encoded images (imports TensorFlow).

JPEG files are decoded only inside the crop window
(`tf.image.decode_and_crop_jpeg`, after reading the image's shape from its
header with `tf.io.extract_jpeg_shape`); other formats are decoded whole,
then cropped. Every random choice is a stateless function of a seed, so a
stream's images depend on their position alone.
"""

import math

import numpy as np
import tensorflow as tf

_ATTEMPTS = 10  # inception-crop candidates, as torchvision and SimCLR


def read_record(sources, offsets, lengths):
    """A function `i -> serialized tf.Example` reading record `i` of a
    table's TFRecord files by its byte range."""
    sources = [s.decode() if isinstance(s, bytes) else s for s in sources]

    def read(source, offset, length):
        with open(sources[int(source)], "rb") as f:
            f.seek(int(offset))
            return np.frombuffer(f.read(int(length)), np.uint8).tobytes()

    def record(source, offset, length):
        data = tf.numpy_function(
            read, [source, offset, length], tf.string, stateful=False
        )
        return tf.ensure_shape(data, ())

    return record


def parse_record(serialized):
    """`(encoded image, int32 label)` of a tfds image record."""
    features = tf.io.parse_single_example(
        serialized,
        {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        },
    )
    return features["image"], tf.cast(features["label"], tf.int32)


def center_window(height, width, size, proportion):
    """The centred window `(y, x, h, w)` of the aspect ratio of `size`
    (the largest that fits, its sides scaled by `proportion`)."""
    aspect = size[1] / size[0]
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    crop_h = tf.minimum(h, w / aspect) * proportion
    crop_w = crop_h * aspect
    crop_h = tf.clip_by_value(tf.round(crop_h), 1.0, h)
    crop_w = tf.clip_by_value(tf.round(crop_w), 1.0, w)
    y = tf.cast((h - crop_h) // 2, tf.int32)
    x = tf.cast((w - crop_w) // 2, tf.int32)
    return y, x, tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32)


def random_window(height, width, seed, scale, ratio):
    """An inception crop window `(y, x, h, w)`: area fraction uniform in
    `scale`, aspect ratio log-uniform in `ratio`, the first of ten
    candidates that fits; else the largest centred window whose aspect
    ratio is in `ratio`."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    u = tf.random.stateless_uniform([2 * _ATTEMPTS + 2], seed)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:_ATTEMPTS])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[_ATTEMPTS : 2 * _ATTEMPTS])
    crop_h = tf.round(tf.sqrt(area / aspect))
    crop_w = tf.round(tf.sqrt(area * aspect))
    fits = (crop_h <= h) & (crop_w <= w) & (crop_h >= 1) & (crop_w >= 1)
    first = tf.argmax(tf.cast(fits, tf.int32))
    # Fallback: the whole image, trimmed to an aspect ratio in `ratio`.
    own = w / h
    fallback_w = tf.where(own > ratio[1], tf.round(h * ratio[1]), w)
    fallback_h = tf.where(own < ratio[0], tf.round(w / ratio[0]), h)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, tf.gather(crop_h, first), fallback_h)
    crop_w = tf.where(found, tf.gather(crop_w, first), fallback_w)
    y = tf.floor(u[-2] * (h - crop_h + 1.0))
    x = tf.floor(u[-1] * (w - crop_w + 1.0))
    y = tf.where(found, y, (h - crop_h) // 2)
    x = tf.where(found, x, (w - crop_w) // 2)
    return tuple(tf.cast(v, tf.int32) for v in (y, x, crop_h, crop_w))


def decode_window(contents, window):
    """Decodes the part `window(height, width) -> (y, x, h, w)` of an
    encoded image: only that window of a JPEG, the whole of a PNG."""

    def jpeg():
        shape = tf.io.extract_jpeg_shape(contents)
        box = tf.stack(window(shape[0], shape[1]))
        return tf.image.decode_and_crop_jpeg(contents, box, channels=3)

    def other():
        image = tf.io.decode_image(
            contents, channels=3, expand_animations=False
        )
        shape = tf.shape(image)
        y, x, h, w = window(shape[0], shape[1])
        return image[y : y + h, x : x + w]

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def resize(image, size):
    """Resizes a uint8 image to `size` (bilinear), as uint8.

    Antialiasing (a wider filter) runs only where a side shrinks more
    than 2x: it costs twice the rest of the decode, and below 2x plain
    bilinear sampling still reads nearly every pixel, as the inception
    preprocessing of SimCLR does for every image.
    """
    image = tf.cast(image, tf.float32)
    shrink = tf.cast(tf.shape(image)[:2], tf.float32) / tf.constant(
        size, tf.float32
    )
    image = tf.cond(
        tf.reduce_max(shrink) > 2.0,
        lambda: tf.image.resize(image, size, antialias=True),
        lambda: tf.image.resize(image, size),
    )
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (*size, 3))


def decode_crop(
    contents,
    size,
    crop,
    seed,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    proportion=1.0,
):
    """One stream image: the window `crop` names, decoded and resized.

    Args:
        contents: scalar string tensor, an encoded image.
        size: `(height, width)`.
        crop: `"full"` (the largest centred window of the aspect of
            `size`), `"center"` (that window's sides scaled by
            `proportion`) or `"random"` (an inception crop with `scale`
            and `ratio`, then a random horizontal flip).
        seed: int64 tensor `(2,)`, the image's stateless seed.
        scale: area range of `"random"` crops.
        ratio: aspect-ratio range of `"random"` crops.
        proportion: float. Side proportion of `"center"` crops.

    Returns:
        A uint8 tensor `(height, width, 3)`.
    """
    if crop == "random":

        def window(height, width):
            return random_window(height, width, seed, scale, ratio)

        image = resize(decode_window(contents, window), size)
        return tf.image.stateless_random_flip_left_right(image, seed + 1)
    proportion = proportion if crop == "center" else 1.0

    def centred(height, width):
        return center_window(height, width, size, proportion)

    return resize(decode_window(contents, centred), size)
