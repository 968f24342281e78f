"""`ImageTable`: references to encoded images, never their pixels.

A table lists where each image of a split is (a file of an image folder,
or a record of a prepared TensorFlow Datasets split) with its label, file
name and id. Streams read the images from it one by one, so the host
holds a few bytes per image whatever the data set's size. The listing is
NumPy only; TensorFlow Datasets is imported only for tfds tables.
"""

import dataclasses
import os
import struct

import numpy as np

from keras_ssl.data._checks import check_seed
from keras_ssl.data.directory import list_class_folders
from keras_ssl.data.labeled_subset import balanced_indices
from keras_ssl.data.labeled_subset import check_selection
from keras_ssl.data.tfds import prepared_tfds_builder

SUBSET_FILES = {"1pct": "1percent.txt", "10pct": "10percent.txt"}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTable:
    """Encoded images of one split, by reference.

    Attributes:
        sources: str array. For a folder, the image files; for a tfds
            split, its record files.
        source: int32 array `(N,)`, each image's entry of `sources`.
        offsets: int64 array `(N,)`, the byte offset of each image's record
            in its record file, or `None` for image files.
        lengths: int64 array `(N,)`, each record's length, or `None`.
        labels: int32 array `(N,)`, or `None` where the labels are only in
            the records (read with the images).
        names: bytes array `(N,)` of file names (no folders), or `None`.
        ids: int64 array `(N,)`, each image's id: its position in the
            training table it was selected from (`-1`: unknown).
        class_names: list of str.
    """

    sources: np.ndarray
    source: np.ndarray
    class_names: list
    offsets: np.ndarray | None = None
    lengths: np.ndarray | None = None
    labels: np.ndarray | None = None
    names: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __len__(self):
        return len(self.source)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_records(self) -> bool:
        return self.offsets is not None

    def take(self, rows) -> "ImageTable":
        """The table of the images at `rows` (their ids are kept)."""
        rows = np.asarray(rows, np.int64)

        def pick(array):
            return None if array is None else array[rows]

        ids = self.ids if self.ids is not None else np.arange(len(self))
        return dataclasses.replace(
            self,
            source=self.source[rows],
            offsets=pick(self.offsets),
            lengths=pick(self.lengths),
            labels=pick(self.labels),
            names=pick(self.names),
            ids=ids[rows].astype(np.int64),
        )


def list_folder(path: str) -> ImageTable:
    """Lists `path/<class>/**/*.{jpg,jpeg,png}` without reading a file.

    Classes sorted by folder name get the ids 0, 1, 2, ...; files are
    sorted within each class, and an image's id is its row.

    Args:
        path: str. The split's folder, e.g. `"imagenet/train"`.

    Returns:
        An `ImageTable` of the image files.
    """
    class_names, files, labels = list_class_folders(path)
    sources = np.array(files, dtype=bytes)
    return ImageTable(
        sources=sources,
        source=np.arange(len(files), dtype=np.int32),
        class_names=class_names,
        labels=np.array(labels, np.int32),
        names=np.array([os.path.basename(f) for f in files], dtype=bytes),
        ids=np.arange(len(files), dtype=np.int64),
    )


def _record_offsets(filename, skip, take):
    """Byte offsets and lengths of records `[skip, skip + take)` of a
    TFRecord file, read from the record headers alone."""
    offsets, lengths = [], []
    with open(filename, "rb") as f:
        index, position = 0, 0
        while take < 0 or index < skip + take:
            header = f.read(12)
            if len(header) < 12:
                break
            (length,) = struct.unpack("<Q", header[:8])
            if index >= skip:
                offsets.append(position + 12)
                lengths.append(length)
            position += 12 + length + 4
            f.seek(position)
            index += 1
    return offsets, lengths


def list_tfds(name: str, split: str, data_dir=None) -> ImageTable:
    """Indexes a prepared TensorFlow Datasets split by its records.

    Only the record headers are read (a seek per record), so indexing all
    of ImageNet's training split takes seconds and holds 20 bytes per
    image. Labels and file names stay in the records and are read with
    the images. Nothing is downloaded.

    Args:
        name: str. tfds name, e.g. `"imagenet2012"` or
            `"imagenet2012_subset/1pct"`.
        split: str. A split name, e.g. `"train"` or `"validation"`.
        data_dir: optional str. The tfds data directory.

    Returns:
        An `ImageTable` of the split's records.
    """
    builder = prepared_tfds_builder(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(
            f"tfds {name!r} has no split {split!r}; it has "
            f"{sorted(builder.info.splits)}. Received: split={split!r}"
        )
    file_format = str(getattr(builder.info, "file_format", "tfrecord"))
    if "tfrecord" not in file_format.lower():
        raise ValueError(
            f"tfds {name!r} is stored as {file_format}; streaming reads "
            "TFRecord files. Prepare it with `--file_format tfrecord`."
        )
    sources, source, offsets, lengths = [], [], [], []
    for i, instruction in enumerate(
        builder.info.splits[split].file_instructions
    ):
        found, sizes = _record_offsets(
            os.fspath(instruction.filename),
            instruction.skip,
            instruction.take,
        )
        sources.append(os.fspath(instruction.filename))
        source += [i] * len(found)
        offsets += found
        lengths += sizes
    label = builder.info.features["label"]
    return ImageTable(
        sources=np.array(sources, dtype=bytes),
        source=np.array(source, np.int32),
        class_names=list(label.names),
        offsets=np.array(offsets, np.int64),
        lengths=np.array(lengths, np.int64),
        ids=np.arange(len(source), dtype=np.int64),
    )


def read_subset_file(path: str) -> list:
    """The file names a labeled-subset file lists (one per line).

    SimCLR's `1percent.txt` / `10percent.txt` list ImageNet training file
    names such as `n01440764_10026.JPEG`; folders are ignored.
    """
    if not os.path.isfile(path):
        raise ValueError(f"`labels` is not a file. Received: labels={path!r}")
    with open(path) as f:
        names = [os.path.basename(line.strip()) for line in f]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"`labels` lists no file names. Received: {path!r}")
    return names


def subset_file(labels: str, data_dir: str) -> str:
    """The subset file that `labels` (`"1pct"`, `"10pct"` or a path) names.

    `1pct` / `10pct` are SimCLR's `1percent.txt` / `10percent.txt`, which
    must be placed in `data_dir`.
    """
    if labels not in SUBSET_FILES:
        return labels
    path = os.path.join(data_dir, SUBSET_FILES[labels])
    if not os.path.isfile(path):
        raise ValueError(
            f"`labels={labels!r}` reads SimCLR's {SUBSET_FILES[labels]} "
            f"(one training file name per line), expected at {path}. Copy it "
            "there from the SimCLR repository (imagenet_subsets/) or give "
            f"its path as `labels`. Received: labels={labels!r}"
        )
    return path


def select_by_name(table: ImageTable, names, where: str) -> ImageTable:
    """The rows of `table` whose file name is in `names`, in table order.

    Raises a `ValueError` listing the names missing from the table.
    """
    wanted = np.array(list(names), dtype=bytes)
    rows = np.flatnonzero(np.isin(table.names, wanted))
    if len(rows) != len(np.unique(wanted)):
        missing = sorted(set(wanted.tolist()) - set(table.names[rows].tolist()))
        raise ValueError(
            f"{where} lists {len(missing)} file name(s) that are not in the "
            f"training images, e.g. {[m.decode() for m in missing[:5]]}"
        )
    return table.take(rows)


def select_balanced(table, per_class=None, fraction=None, seed=0):
    """A class-balanced subset of a table with labels, as
    `keras_ssl.data.labeled_subset` selects it from arrays."""
    check_selection(per_class, fraction, None)
    if table.labels is None:
        raise ValueError(
            "A per-class or fractional subset needs the labels of the "
            "table; a tfds table has them only in its records: select by "
            "file names (`labels='1pct'`) instead."
        )
    rows = balanced_indices(
        table.labels, per_class, fraction, check_seed(seed), table.num_classes
    )
    return table.take(rows)


def read_labels(table):
    """The table with the labels and file names its records hold.

    Reads every record of the table once (the images are not decoded);
    a folder's table already has them and is returned as it is.
    """
    # Deferred: TensorFlow is optional (the helper below imports it too).
    import tensorflow as tf

    from keras_ssl.data._decode import read_record

    if table.labels is not None and table.names is not None:
        return table
    record = read_record(table.sources, table.offsets, table.lengths)

    def fields(source, offset, length):
        parsed = tf.io.parse_single_example(
            record(source, offset, length),
            {
                "label": tf.io.FixedLenFeature([], tf.int64),
                "file_name": tf.io.FixedLenFeature([], tf.string, b""),
            },
        )
        return tf.cast(parsed["label"], tf.int32), parsed["file_name"]

    rows = tf.data.Dataset.from_tensor_slices(
        (table.source, table.offsets, table.lengths)
    )
    labels, names = [], []
    scan = rows.map(fields, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
    for batch_labels, batch_names in scan.as_numpy_iterator():
        labels.append(batch_labels)
        names.append(batch_names)
    return dataclasses.replace(
        table,
        labels=np.concatenate(labels).astype(np.int32),
        names=np.concatenate(names).astype(bytes),
    )
