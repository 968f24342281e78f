"""`ArrayDataset` and `from_arrays()`: batches of in-memory images."""

import math

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images
from keras_ssl.data._checks import check_num_classes
from keras_ssl.data._checks import check_seed
from keras_ssl.data._host_dataset import HostDataset


class ArrayDataset(HostDataset):
    """Shuffled batches of in-memory uint8 images (and int32 labels).

    The NumPy pipeline for data that fits in memory (CIFAR-10, the labeled
    subsets of larger sets). It is a `keras.utils.PyDataset`, so `fit()`
    takes it on every Keras backend, and it needs no TensorFlow;
    `to_tf_dataset()` gives the same batches as a `tf.data.Dataset` for
    `tf.distribute`. Batches depend only on `(seed, epoch, index)`.

    Each batch is the uint8 image array `(B, H, W, 3)` when there are no
    labels, else the tuple `(images, labels)` with int32 labels `(B,)`.

    Args:
        x: array of shape `(N, H, W, 3)`: uint8, or float in [0, 1]
            (converted to uint8 as `round(255 * x)`), or integers in
            [0, 255]. Anything else raises `ValueError`.
        y: optional integer labels of shape `(N,)` (or `(N, 1)`).
        batch_size: int. Defaults to `32`.
        shuffle: bool. Reshuffle the examples every epoch. Defaults to
            `True`.
        seed: int. Seed of the shuffles. Defaults to `0`.
        drop_remainder: bool. Drop the last, short batch of each epoch.
            Defaults to `False`.
        repeat: bool. Infinite stream: index `i` is batch
            `i % steps_per_epoch` of epoch `i // steps_per_epoch`; pass
            `steps_per_epoch` to `fit()`. Defaults to `False` (one epoch
            per pass; `on_epoch_end()` reshuffles).
        num_classes: optional int. Labels must lie in `[0, num_classes)`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Example:

    ```python
    x = np.zeros((40, 8, 8, 3), "uint8")
    y = np.arange(40) % 4
    ds = keras_ssl.data.ArrayDataset(x, y, batch_size=8, seed=1)
    images, labels = ds[0]  # (8, 8, 8, 3) uint8, (8,) int32
    ```
    """

    def __init__(
        self,
        x,
        y=None,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        repeat: bool = False,
        num_classes=None,
        **kwargs,
    ):
        self.x = as_uint8_images(x, "x")
        self.num_classes = check_num_classes(num_classes)
        self.y = (
            None
            if y is None
            else as_int32_labels(y, len(self.x), self.num_classes, "y")
        )
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed)
        self.drop_remainder = bool(drop_remainder)
        count = len(self.x)
        if count == 0:
            raise ValueError("`x` holds no images. Received: x.shape[0]=0")
        if self.drop_remainder and count < self.batch_size:
            raise ValueError(
                f"`batch_size` must not exceed the number of images ({count})"
                f" when drop_remainder=True. Received: "
                f"batch_size={batch_size}"
            )
        rounding = math.floor if self.drop_remainder else math.ceil
        super().__init__(
            steps_per_epoch=rounding(count / self.batch_size),
            repeat=repeat,
            **kwargs,
        )

    def batch_sizes(self):
        return {"batch_size": self.batch_size}

    def full_batches(self):
        return self.drop_remainder or len(self.x) % self.batch_size == 0

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of `epoch`, in the order they are served."""
        if not self.shuffle:
            return np.arange(len(self.x))
        return self.permutation(self.seed, 0, epoch, len(self.x))

    def batch_at(self, epoch, index):
        start = index * self.batch_size
        rows = self.order(epoch)[start : start + self.batch_size]
        if self.y is None:
            return self.x[rows]
        return self.x[rows], self.y[rows]


def from_arrays(x, y=None, **kwargs) -> ArrayDataset:
    """Batches in-memory images (and labels) on the host, without TF.

    The same as `ArrayDataset(x, y, **kwargs)`, with every other argument
    given by keyword.

    Args:
        x: array of shape `(N, H, W, 3)`, uint8 (or float in [0, 1]).
        y: optional integer labels of shape `(N,)`.
        **kwargs: the keyword arguments of `ArrayDataset`, with its
            defaults: `batch_size` (`32`), `shuffle` (`True`), `seed`
            (`0`), `drop_remainder` (`False`), `repeat` (`False`),
            `num_classes` (`None`), and those of `keras.utils.PyDataset`.

    Returns:
        An `ArrayDataset` yielding uint8 image batches, or
        `(images, int32 labels)` when `y` is given. See `ArrayDataset`.

    Example:

    ```python
    ds = keras_ssl.data.from_arrays(x_train, y_train, batch_size=256)
    model.fit(ds, epochs=10)  # any backend
    tf_ds = ds.to_tf_dataset()  # tf.data, for tf.distribute
    ```
    """
    return ArrayDataset(x, y, **kwargs)
