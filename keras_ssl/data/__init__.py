"""Host input pipelines. They yield uint8 images and int labels.

Where things are (public names come from `keras_ssl.data`):

In-memory (NumPy; `fit()` takes them on every backend, no TensorFlow):
- `array_dataset`: `ArrayDataset` / `from_arrays()`, shuffled batches of
  images (and labels).
- `semi_supervised`: `SemiSupervisedDataset` / `semi_supervised()`, the
  dict batches of unlabeled, labeled and support images the pretrainers
  train on; `_semi_supervised_tf` is its tf.data path, for
  `tf.data.Dataset` sources.
- `support_sampler`: `SupportSampler`, PAWS's class-balanced support
  batches.
- `labeled_subset`: `LabeledSubset` / `labeled_subset()`, deterministic,
  class-balanced labeled subsets (or SimCLR's index files).
- `_host_dataset`: `HostDataset`, the `keras.utils.PyDataset` base of the
  three pipelines above (batches a function of `(seed, epoch, index)`,
  split over replicas).

Loading and converting:
- `npz`: `load_npz()`, arrays from a `.npz` archive.
- `prepare`: `prepare_images()`, any images as uint8 RGB at one size.
- `directory`: `from_directory()`, class sub-folders of image files as
  tf.data.
- `tfds`: `from_tfds()`, a TensorFlow Datasets split as tf.data, and
  `prepared_tfds_builder()`, which refuses to download.
- `distributed`: `distribute_dataset()`, per-replica input for a
  `tf.distribute` strategy.

Streaming (`streaming/`, data sets too large for memory, such as
ImageNet; see `keras_ssl.data.streaming`):
- `streaming.image_table`: `ImageTable`, images listed by reference
  (files or tfds records), and the functions that list and select them.
- `streaming.image_stream`: `ImageStream`, resumable batches read and
  decoded from a table.
- `streaming.support_stream`: `SupportStream`, `SupportSampler`'s batches
  read from a table.
- `streaming.streaming_dataset`: `StreamingDataset`, `semi_supervised()`'s
  dict batches from streams.

Private helpers:
- `_checks`: argument checks (NumPy only) that raise `ValueError`.
- `_tf_elements`: checks and conversions of tf.data elements (TensorFlow).
- `_decode`: reading, decoding and cropping of encoded images
  (TensorFlow).

Only `_tf_elements`, `_decode` and `_semi_supervised_tf` import TensorFlow
when loaded; the rest import it inside the functions that build tf.data
pipelines, so `import keras_ssl.data` works without it.
"""

from keras_ssl.data import streaming
from keras_ssl.data.array_dataset import ArrayDataset
from keras_ssl.data.array_dataset import from_arrays
from keras_ssl.data.directory import from_directory
from keras_ssl.data.distributed import distribute_dataset
from keras_ssl.data.labeled_subset import LabeledSubset
from keras_ssl.data.labeled_subset import labeled_subset
from keras_ssl.data.npz import load_npz
from keras_ssl.data.prepare import prepare_images
from keras_ssl.data.semi_supervised import SemiSupervisedDataset
from keras_ssl.data.semi_supervised import semi_supervised
from keras_ssl.data.support_sampler import SupportSampler
from keras_ssl.data.tfds import from_tfds
