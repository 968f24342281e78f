"""`ImageStream`: batches streamed from an `ImageTable`, resumable.

The host reads and decodes each image when it is needed and keeps only
the table (a few bytes per image), so its memory does not grow with the
data set. Which image sits at each position of the stream is arithmetic:
epoch `e` visits the table in the order of a stateless permutation
seeded with `(seed, salt, e)` (`tf.random.experimental.index_shuffle`),
and each image's random crop is seeded by its position. So the stream
started at step `s` yields exactly the batches the stream started at 0
yields from step `s` on, without reading the skipped images, and every
input pipeline of a multi-worker strategy knows its share of each global
batch without talking to the others.
"""

import dataclasses

import numpy as np

from keras_ssl._checks import check_aspect_ratio
from keras_ssl._checks import check_crop_scale
from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import check_image_size
from keras_ssl.data._checks import check_seed

CROPS = ("full", "center", "random")


def _check_crop(crop, crop_scale, ratio, proportion):
    if crop not in CROPS:
        raise ValueError(
            f"`crop` must be one of {CROPS}. Received: crop={crop!r}"
        )
    scale = check_crop_scale("crop_scale", crop_scale)
    ratio = check_aspect_ratio("ratio", ratio)
    if not 0.0 < proportion <= 1.0:
        raise ValueError(
            "`center_proportion` must be in (0, 1]. Received: "
            f"center_proportion={proportion!r}"
        )
    return scale, ratio


@dataclasses.dataclass(eq=False)
class ImageStream:
    """Batches of `(uint8 images, int32 labels, int64 ids)` from a table.

    Training streams (`repeat=True`) are infinite: global batch `s` holds
    the images at positions `[s * batch_size, (s + 1) * batch_size)` of
    the endless sequence of epochs, so batches run across epoch ends and
    every batch is full. An evaluation stream (`repeat=False`) is one pass
    in table order with a short last batch.

    Images come out at `image_size`, cut from the encoded image by
    `crop`:

    - `"full"`: the largest centred window of the output's aspect ratio,
      resized (what the on-device `keras_ssl.layers.Views` and
      `FineTuner` then crop from, as they do from in-memory images);
    - `"center"`: that window scaled by `center_proportion` (SimCLR's
      0.875 evaluation crop);
    - `"random"`: an inception crop (`crop_scale`, `ratio`) and a random
      horizontal flip, as SimCLR's host input crops.

    JPEGs are decoded inside that window only.

    Args:
        table: `keras_ssl.data.ImageTable`.
        batch_size: int. Global batch size.
        image_size: int or `(height, width)`.
        crop: str. See above. Defaults to `"full"`.
        crop_scale: tuple. Area range of `"random"` crops. Defaults to
            `(0.08, 1.0)`.
        ratio: tuple. Aspect-ratio range of `"random"` crops. Defaults to
            `(3/4, 4/3)`.
        center_proportion: float in (0, 1]. Defaults to `0.875`.
        shuffle: bool. Visit each epoch in a new seeded order. Defaults to
            `True`.
        repeat: bool. Infinite training stream. Defaults to `True`.
        seed: int. Defaults to `0`.
        salt: int. Tells apart streams of one seed (e.g. the unlabeled
            and the labeled stream). Defaults to `0`.
        skip_corrupt: bool. Drop images that fail to decode instead of
            failing. A dropped image shifts the later batches, so exact
            resume then holds only while no corrupt image is met; remove
            corrupt files for exact resume. Defaults to `False`.
    """

    table: object
    batch_size: int
    image_size: object
    crop: str = "full"
    crop_scale: tuple = (0.08, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    center_proportion: float = 0.875
    shuffle: bool = True
    repeat: bool = True
    seed: int = 0
    salt: int = 0
    skip_corrupt: bool = False

    def __post_init__(self):
        self.batch_size = check_positive_int("batch_size", self.batch_size)
        if self.image_size is None:
            raise ValueError(
                "`image_size` is required to batch images of any size. "
                "Received: image_size=None"
            )
        self.image_size = check_image_size(self.image_size)
        self.crop_scale, self.ratio = _check_crop(
            self.crop, self.crop_scale, self.ratio, self.center_proportion
        )
        self.seed = check_seed(self.seed)
        self.salt = check_seed(self.salt, "salt")
        if self.repeat and len(self.table) < self.batch_size:
            raise ValueError(
                f"`batch_size` must not exceed the number of images "
                f"({len(self.table)}). Received: batch_size={self.batch_size}"
            )

    def __len__(self):
        """Batches in one pass: `ceil(N / batch_size)` for an evaluation
        stream, `N // batch_size` steps per epoch for a training one."""
        count = len(self.table)
        if self.repeat:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def per_pipeline(self, input_context):
        """`(images per step of this pipeline, per-replica batch)`."""
        if input_context is None:
            return self.batch_size, self.batch_size
        pipelines = input_context.num_input_pipelines
        replicas = input_context.num_replicas_in_sync
        if self.batch_size % replicas or self.batch_size % pipelines:
            raise ValueError(
                "`batch_size` must be divisible by the number of replicas "
                f"({replicas}) and of input pipelines ({pipelines}). "
                f"Received: batch_size={self.batch_size}"
            )
        return (
            self.batch_size // pipelines,
            input_context.get_per_replica_batch_size(self.batch_size),
        )

    def positions(self, input_context=None, start_step: int = 0):
        """The `tf.data` stream of `(table row, stream position)` of this
        input pipeline's images, from global step `start_step` on."""
        # Deferred: TensorFlow is optional for keras_ssl.data.
        import tensorflow as tf

        count = len(self.table)
        if not self.repeat:
            rows = tf.data.Dataset.range(count)
            if input_context is not None:
                rows = rows.shard(
                    input_context.num_input_pipelines,
                    input_context.input_pipeline_id,
                )
            return rows.map(lambda row: (row, row))
        chunk, _ = self.per_pipeline(input_context)
        pipeline = pipeline_of(input_context)
        key = self.seed * 1_000_003 + self.salt

        def position(m):
            # This pipeline's element m is element n of the global stream.
            step, j = m // chunk, m % chunk
            n = step * self.batch_size + pipeline * chunk + j
            epoch, row = n // count, n % count
            if self.shuffle:
                row = tf.random.experimental.index_shuffle(
                    row, tf.stack([key, epoch]), count - 1
                )
            return row, n

        start = check_seed(start_step, "start_step") * chunk
        return tf.data.Dataset.range(start, np.iinfo(np.int64).max).map(
            position
        )

    def examples(self, rows):
        """Maps `(row, position)` to `(image, label, id)` with the table's
        readers; `rows` is a `tf.data` stream of such pairs."""
        # Deferred: TensorFlow is optional (the helper below imports it too).
        import tensorflow as tf

        from keras_ssl.data._decode import decode_crop

        reader = read_rows(self.table)
        key = self.seed * 1_000_003 + self.salt

        def example(row, position):
            contents, label, image_id = reader(row)
            image = decode_crop(
                contents,
                self.image_size,
                self.crop,
                tf.stack([tf.constant(key, tf.int64), position]),
                scale=self.crop_scale,
                ratio=self.ratio,
                proportion=self.center_proportion,
            )
            return image, label, image_id

        examples = rows.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        if self.skip_corrupt:
            examples = examples.ignore_errors()
        return examples

    def to_tf_dataset(self, input_context=None, start_step: int = 0):
        """Per-replica batches `(images, labels, ids)` from `start_step`.

        Args:
            input_context: optional `tf.distribute.InputContext`: this
                input pipeline's share of each global batch, in batches
                of `input_context.get_per_replica_batch_size`.
            start_step: int. Global batches to leave out (exact resume).

        Returns:
            A prefetched `tf.data.Dataset`.
        """
        _, per_replica = self.per_pipeline(input_context)
        examples = self.examples(self.positions(input_context, start_step))
        batches = examples.batch(per_replica, drop_remainder=self.repeat)
        return with_options(batches)


def pipeline_of(input_context) -> int:
    """The input pipeline's id (0 without an input context)."""
    return 0 if input_context is None else input_context.input_pipeline_id


def read_rows(table):
    """A function `row -> (encoded image, int32 label, int64 id)`."""
    # Deferred: TensorFlow is optional (the helpers below import it too).
    import tensorflow as tf

    from keras_ssl.data._decode import parse_record
    from keras_ssl.data._decode import read_record

    ids = table.ids if table.ids is not None else np.arange(len(table))
    ids = tf.constant(ids, tf.int64)
    labels = None if table.labels is None else tf.constant(table.labels)
    source = tf.constant(table.source, tf.int32)
    if table.is_records:
        record = read_record(table.sources, table.offsets, table.lengths)
        offsets = tf.constant(table.offsets)
        lengths = tf.constant(table.lengths)

        def contents_and_label(row):
            serialized = record(
                tf.gather(source, row),
                tf.gather(offsets, row),
                tf.gather(lengths, row),
            )
            return parse_record(serialized)

    else:
        paths = tf.constant(table.sources)

        def contents_and_label(row):
            path = tf.gather(paths, tf.gather(source, row))
            return tf.io.read_file(path), None

    def read(row):
        contents, label = contents_and_label(row)
        if labels is not None:
            label = tf.gather(labels, row)
        return contents, label, tf.gather(ids, row)

    return read


def with_options(dataset, threads=None):
    """Prefetches and sets the stream's `tf.data` options: deterministic
    order (exact resume), autotuned parallelism, and an own thread pool
    of `threads` when given."""
    # Deferred: TensorFlow is optional for keras_ssl.data.
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    if threads:
        options.threading.private_threadpool_size = int(threads)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
