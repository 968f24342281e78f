"""Checks and conversions of `tf.data` elements (imports TensorFlow).

Only the tf.data code paths import this module, so the NumPy pipelines
keep working where TensorFlow is not installed.
"""

import tensorflow as tf


def _check_image_spec(spec, name: str):
    if not isinstance(spec, tf.TensorSpec):
        raise ValueError(
            f"`{name}` must yield image tensors. Received: element spec {spec}"
        )
    if spec.shape.rank == 4:
        raise ValueError(
            f"`{name}` must be an unbatched dataset of (H, W, 3) images; "
            f"batching is done here. Received: image spec {spec}"
        )
    if spec.shape.rank != 3 or spec.shape[-1] not in (None, 3):
        raise ValueError(
            f"`{name}` must yield RGB images of shape (H, W, 3). "
            f"Received: image spec {spec}"
        )
    if spec.dtype != tf.uint8:
        raise ValueError(
            f"`{name}` must yield uint8 images. Received: image dtype "
            f"{spec.dtype.name}"
        )


def _check_label_spec(spec, name: str):
    if (
        not isinstance(spec, tf.TensorSpec)
        or not spec.dtype.is_integer
        or spec.shape.rank != 0
    ):
        raise ValueError(
            f"`{name}` must yield scalar integer labels. Received: label "
            f"spec {spec}"
        )


def element_parts(
    dataset,
    name: str,
    with_label: bool,
    image_key: str = "image",
    label_key: str = "label",
):
    """A function mapping one element of `dataset` to its parts.

    Elements may be an image tensor, a tuple `(image, label, ...)` or a
    dict with `image_key` / `label_key` (as `tfds.load` yields). The image
    must be uint8 `(H, W, 3)`; labels scalar integers (cast to int32).

    Args:
        dataset: a `tf.data.Dataset`.
        name: str. Argument name for error messages.
        with_label: bool. Whether a label is required and returned.
        image_key: str. Image key of dict elements.
        label_key: str. Label key of dict elements.

    Returns:
        A function taking the element (a tuple element as one tuple) and
        returning `image`, or `(image, int32 label)` when `with_label`.
    """
    spec = dataset.element_spec
    if isinstance(spec, dict):
        wanted = [("image_key", image_key)]
        if with_label:
            wanted.append(("label_key", label_key))
        for key_name, key in wanted:
            if key not in spec:
                raise ValueError(
                    f"`{key_name}` names no feature of `{name}`, which "
                    f"yields dicts with keys {sorted(spec)}. Received: "
                    f"{key_name}={key!r}"
                )
        image_spec = spec[image_key]
        label_spec = spec.get(label_key)

        def image_of(element):
            return element[image_key]

        def label_of(element):
            return element[label_key]

    elif isinstance(spec, tuple):
        image_spec = spec[0]
        label_spec = spec[1] if len(spec) > 1 else None
        if with_label and label_spec is None:
            raise ValueError(
                f"`{name}` must yield (image, label) pairs. Received: "
                f"element spec {spec}"
            )

        def image_of(element):
            return element[0]

        def label_of(element):
            return element[1]

    else:
        image_spec, label_spec = spec, None
        if with_label:
            raise ValueError(
                f"`{name}` must yield (image, label) pairs or dicts with "
                f"labels. Received: element spec {spec}"
            )

        def image_of(element):
            return element

        label_of = None
    _check_image_spec(image_spec, name)
    if not with_label:
        return image_of
    _check_label_spec(label_spec, name)

    def pair_of(element):
        return image_of(element), tf.cast(label_of(element), tf.int32)

    return pair_of


def map_elements(dataset, function, **kwargs):
    """`dataset.map` that hands `function` tuple elements as one tuple."""

    def call(*parts):
        return function(parts[0] if len(parts) == 1 else parts)

    return dataset.map(call, **kwargs)


def resize_uint8(image, image_size):
    """Centre-crops `image` to the aspect of `image_size`, then resizes.

    Cropping first keeps the objects' proportions (as Keras's
    `crop_to_aspect_ratio=True` does); antialiasing avoids aliasing when a
    large photo is shrunk to a small side.

    Args:
        image: uint8 tensor `(H, W, 3)`.
        image_size: `(height, width)`.

    Returns:
        A uint8 tensor `(height, width, 3)`.
    """
    height, width = image_size
    shape = tf.shape(image)
    in_h, in_w = shape[0], shape[1]
    # Largest window of the target aspect that fits, centred.
    crop_h = tf.minimum(in_h, in_w * height // width)
    crop_w = tf.minimum(in_w, in_h * width // height)
    crop_h = tf.maximum(crop_h, 1)
    crop_w = tf.maximum(crop_w, 1)
    top = (in_h - crop_h) // 2
    left = (in_w - crop_w) // 2
    image = image[top : top + crop_h, left : left + crop_w]
    image = tf.image.resize(
        tf.cast(image, tf.float32), (height, width), antialias=True
    )
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    return tf.ensure_shape(tf.cast(image, tf.uint8), (height, width, 3))


def images_and_labels(dataset, name, image_key, label_key, image_size):
    """Maps the elements of `dataset` (dicts, tuples or images; see
    `element_parts`) to uint8 images, or `(image, int32 label)` pairs
    unless `label_key` is `None`, resized to `image_size` when given."""
    parts = element_parts(
        dataset, name, label_key is not None, image_key, label_key or "label"
    )

    def convert(element):
        converted = parts(element)
        if image_size is None:
            return converted
        if label_key is None:
            return resize_uint8(converted, image_size)
        return resize_uint8(converted[0], image_size), converted[1]

    return map_elements(dataset, convert, num_parallel_calls=tf.data.AUTOTUNE)
