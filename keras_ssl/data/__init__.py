"""Host input pipelines. They yield uint8 images and int labels."""

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
