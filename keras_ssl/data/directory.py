"""`from_directory()`: class sub-folders of JPEG / PNG images."""

import os
import warnings

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import check_image_size
from keras_ssl.data._checks import check_seed

_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_class_folders(path):
    """Sorted class names and `(file path, class id)` pairs."""
    if not os.path.isdir(path):
        raise ValueError(f"`path` is not a directory. Received: path={path!r}")
    class_names = sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(
            "`path` must hold one sub-folder of images per class; it has "
            f"none. Received: path={path!r}"
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = []
        for root, dirs, names in os.walk(os.path.join(path, name)):
            dirs.sort()
            found += [
                os.path.join(root, n)
                for n in sorted(names)
                if n.lower().endswith(_EXTENSIONS)
            ]
        if not found:
            raise ValueError(
                f"Class folder {os.path.join(path, name)!r} holds no JPEG or "
                f"PNG images. Received: path={path!r}"
            )
        files += found
        labels += [label] * len(found)
    return class_names, files, labels


def _decode(file_path):
    # Deferred: TensorFlow is optional for keras_ssl.data.
    import tensorflow as tf

    return tf.io.decode_image(
        tf.io.read_file(file_path), channels=3, expand_animations=False
    )


def _probe(files):
    """Decodes every file once: `{index: (height, width)}` of the good ones.

    Files that fail to decode are missing from the result; tf.data's
    `ignore_errors` drops them and the decoding runs in parallel.
    """
    # Deferred: TensorFlow is optional for keras_ssl.data.
    import tensorflow as tf

    probe = (
        tf.data.Dataset.from_tensor_slices(files)
        .enumerate()
        .map(
            lambda i, f: (i, tf.shape(_decode(f))[:2]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()
    )
    return {
        int(i): tuple(int(v) for v in shape)
        for i, shape in probe.as_numpy_iterator()
    }


def _drop_corrupt(files, labels, skip_corrupt):
    sizes = _probe(files)
    corrupt = [f for i, f in enumerate(files) if i not in sizes]
    if corrupt and not skip_corrupt:
        raise ValueError(
            f"Cannot decode image file {corrupt[0]!r} ({len(corrupt)} "
            "corrupt file(s) in all); fix or remove it, or pass "
            "skip_corrupt=True to skip corrupt files. Received: "
            "skip_corrupt=False"
        )
    if corrupt:
        warnings.warn(
            f"from_directory: skipping {len(corrupt)} corrupt image "
            f"file(s): {corrupt[:10]}",
            stacklevel=3,
        )
    keep = sorted(sizes)
    return (
        [files[i] for i in keep],
        [labels[i] for i in keep],
        {sizes[i] for i in keep},
    )


def from_directory(
    path: str,
    image_size=None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    skip_corrupt: bool = False,
    validate: bool = True,
    drop_remainder: bool = False,
):
    """Loads `path/<class name>/**/*.{jpg,jpeg,png}` as a `tf.data` pipeline.

    One sub-folder per class; classes sorted by folder name get the ids
    0, 1, 2, ... Yields `(image, label)` with uint8 RGB images `(H, W, 3)`
    (grayscale and RGBA files are converted) and int32 labels, batched
    when `batch_size` is given. The dataset carries `class_names` and
    `file_paths` (in class order) as attributes.

    With `validate=True` (the default) every file is decoded once on the
    host, in parallel, before the pipeline is built: a corrupt file raises
    a `ValueError` naming it, or with `skip_corrupt=True` is dropped with
    a warning listing the files. That costs one decoding pass over the
    data (for data sets too large for that, such as ImageNet, stream them
    with `keras_ssl.data.streaming`, which reads no file up front). With
    `validate=False` nothing is checked up front: a corrupt
    file fails the pipeline when it is reached (with TensorFlow's error,
    which does not name the file), or with `skip_corrupt=True` is dropped
    silently.

    Args:
        path: str. Root folder.
        image_size: optional int or `(height, width)`. Centre-crop to that
            aspect ratio and resize; needed to batch images of different
            sizes.
        batch_size: optional int. `None` yields single examples.
        shuffle: bool. Shuffle all files, reshuffled each pass. Defaults
            to `False`.
        seed: int. Defaults to `0`.
        skip_corrupt: bool. Skip undecodable files instead of raising.
            Defaults to `False`.
        validate: bool. Decode every file up front (see above). Defaults
            to `True`.
        drop_remainder: bool. Drop a short last batch. Defaults to `False`.

    Returns:
        A prefetched `tf.data.Dataset` with `class_names` and `file_paths`.

    Example:

    ```python
    train = keras_ssl.data.from_directory(
        "flowers/train", image_size=224, batch_size=64, shuffle=True)
    train.class_names  # ['daisy', 'dandelion', ...]
    ```
    """
    # Deferred: TensorFlow is optional (the helper below imports it too).
    import tensorflow as tf

    from keras_ssl.data._tf_elements import resize_uint8

    image_size = check_image_size(image_size)
    seed = check_seed(seed)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    class_names, files, labels = list_class_folders(path)
    static_shape = (None, None, 3)
    if validate:
        files, labels, sizes = _drop_corrupt(files, labels, skip_corrupt)
        if not files:
            raise ValueError(
                f"`path` holds no decodable images. Received: path={path!r}"
            )
        if image_size is None and batch_size is not None and len(sizes) > 1:
            raise ValueError(
                f"The images under {path!r} have different sizes "
                f"{sorted(sizes)[:5]}; pass `image_size` to batch them. "
                "Received: image_size=None"
            )
        if len(sizes) == 1:
            static_shape = (*sizes.pop(), 3)

    def load(file_path, label):
        image = _decode(file_path)
        if image_size is not None:
            image = resize_uint8(image, image_size)
        else:
            image = tf.ensure_shape(image, static_shape)
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files), tf.constant(labels, tf.int32))
    )
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_corrupt and not validate:
        dataset = dataset.ignore_errors()
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset.class_names = class_names
    dataset.file_paths = files
    return dataset
