"""`from_arrays()` is `ArrayDataset` with keyword arguments."""

import numpy as np
import pytest

from keras_ssl.data import ArrayDataset
from keras_ssl.data import from_arrays


def test_same_batches_as_array_dataset():
    x = np.arange(10 * 4 * 4 * 3).reshape(10, 4, 4, 3).astype("uint8")
    y = np.arange(10) % 3
    args = dict(batch_size=4, seed=2, drop_remainder=True, num_classes=3)
    ds = from_arrays(x, y, **args)
    reference = ArrayDataset(x, y, **args)
    assert type(ds) is ArrayDataset
    assert len(ds) == len(reference) == 2
    for index in range(len(ds)):
        for got, want in zip(ds[index], reference[index]):
            np.testing.assert_array_equal(got, want)


def test_arguments_after_y_are_keywords():
    x = np.zeros((4, 4, 4, 3), "uint8")
    with pytest.raises(TypeError):
        from_arrays(x, None, 2)


def test_bad_argument_names_the_argument():
    x = np.zeros((4, 4, 4, 3), "uint8")
    with pytest.raises(ValueError, match="batch_size"):
        from_arrays(x, batch_size=0)
