"""`from_tfds()`: a TensorFlow Datasets split as uint8 images and labels."""

import os

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import check_image_size
from keras_ssl.data._checks import check_seed


def from_tfds(
    name: str,
    split: str,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer_size: int = 10_000,
    data_dir: str | None = None,
    image_key: str = "image",
    label_key: str | None = "label",
    image_size=None,
    drop_remainder: bool = False,
    download: bool = True,
    input_context=None,
):
    """Loads a TensorFlow Datasets split as a `tf.data` pipeline.

    Yields `(image, label)` with uint8 images `(H, W, 3)` and int32 labels
    (tfds's int64 class labels are cast), batched to `(B, H, W, 3)` /
    `(B,)` when `batch_size` is given; images only when `label_key` is
    `None`. Augmentation happens later, on the device. For the ImageNet
    1% / 10% subsets use tfds's `imagenet2012_subset/1pct` (or `10pct`)
    configs, built from SimCLR's index files, or `labeled_subset()`.

    Args:
        name: str. tfds name, e.g. `"cifar10"` or
            `"imagenet2012_subset/10pct"`.
        split: str. Split, e.g. `"train"` or `"train[:10%]"`.
        batch_size: optional int. `None` yields single examples (what
            `semi_supervised()`, `labeled_subset()` and
            `distribute_dataset()` take).
        shuffle: bool. Shuffle the files and the examples (a buffer of
            `shuffle_buffer_size`), reshuffled each pass. Defaults to
            `False`.
        seed: int. Seed of the shuffles. Defaults to `0`.
        shuffle_buffer_size: int. Defaults to `10000`.
        data_dir: optional str. tfds data directory.
        image_key: str. Image feature. Defaults to `"image"`.
        label_key: str or None. Label feature. Defaults to `"label"`.
        image_size: optional int or `(height, width)`. Centre-crop to that
            aspect ratio and resize (needed to batch data sets with images
            of different sizes, such as ImageNet).
        drop_remainder: bool. Drop a short last batch. Defaults to `False`.
        download: bool. Let tfds download and prepare the data if needed.
            Defaults to `True`.
        input_context: optional `tf.distribute.InputContext`; tfds then
            reads only this input pipeline's share of the files.

    Returns:
        A prefetched `tf.data.Dataset`.

    Example:

    ```python
    train = keras_ssl.data.from_tfds(
        "cifar10", "train", batch_size=256, shuffle=True)
    ```
    """
    # Deferred: TensorFlow is optional (the helper below imports it too).
    import tensorflow as tf

    from keras_ssl.data._tf_elements import images_and_labels

    seed = check_seed(seed)
    buffer = check_positive_int("shuffle_buffer_size", shuffle_buffer_size)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    image_size = check_image_size(image_size)
    raw = _load(name, split, data_dir, shuffle, download, seed, input_context)
    # Converting first checks the keys and the element spec.
    dataset = images_and_labels(
        raw, f"tfds {name!r}", image_key, label_key, image_size
    )
    image_shape = raw.element_spec[image_key].shape
    if (
        batch_size is not None
        and image_size is None
        and not image_shape[:2].is_fully_defined()
    ):
        raise ValueError(
            f"tfds {name!r} has images of varying size {image_shape}; pass "
            "`image_size` to batch them. Received: image_size=None"
        )
    if shuffle:
        dataset = dataset.shuffle(buffer, seed=seed)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _load(name, split, data_dir, shuffle, download, seed, input_context):
    """`tfds.load` of the split's dict elements, files shuffled with `seed`."""
    # Deferred: tensorflow_datasets is needed only for tfds data.
    import tensorflow_datasets as tfds

    return tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        shuffle_files=shuffle,
        download=download,
        read_config=tfds.ReadConfig(
            shuffle_seed=seed, input_context=input_context
        ),
    )


def prepared_tfds_builder(name: str, data_dir=None):
    """The tfds builder of `name`, which must be prepared under `data_dir`.

    Nothing is downloaded: without network access tfds would spend minutes
    in retries before failing, so a data set that is not prepared fails at
    once, naming the folder it is expected in.

    Raises:
        ValueError: `name` is not a TensorFlow Datasets name.
        FileNotFoundError: the data set is not prepared under `data_dir`
            (tfds's default folder when `data_dir` is `None`).
    """
    # Deferred: tensorflow_datasets is needed only for tfds data.
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TensorFlow Datasets data set. Received: {name!r}"
        ) from None
    if builder.is_prepared():
        return builder
    folder = os.fspath(builder.data_dir)
    root = folder
    for _ in builder.info.full_name.split("/"):
        root = os.path.dirname(root)
    raise FileNotFoundError(
        f"The TensorFlow Datasets data set {name!r} is not prepared under "
        f"{root}: expected it in {folder}. The recipes do not download "
        "data. Prepare it where there is network access with `tfds build "
        f"{name} --data_dir {root}` and copy the folder over, or give the "
        "folder that holds a prepared copy as `data_dir` (`--data_dir`)."
    )
