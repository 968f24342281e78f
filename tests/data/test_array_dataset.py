import keras
import numpy as np
import pytest

from keras_ssl.data import ArrayDataset
from keras_ssl.data import from_arrays
from keras_ssl.testing import TestCase


def _ids(images, x):
    """Row of `x` each image is (the tiny images are all distinct)."""
    lookup = {row.tobytes(): i for i, row in enumerate(x)}
    return [lookup[image.tobytes()] for image in images]


class TestArrayDataset(TestCase):
    def test_batches_shapes_and_dtypes(self, tiny):
        x, y = tiny
        ds = from_arrays(x, y, batch_size=8, seed=3)
        assert isinstance(ds, keras.utils.PyDataset)
        assert len(ds) == 5 and ds.num_batches == 5
        images, labels = ds[0]
        self.assertShape(images, (8, 8, 8, 3))
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        # Each label still belongs to its image.
        np.testing.assert_array_equal(labels, y[_ids(images, x)])

    def test_unlabeled_batches_are_plain_arrays(self, tiny):
        x, _ = tiny
        batch = from_arrays(x, batch_size=8)[1]
        assert isinstance(batch, np.ndarray) and batch.shape == (8, 8, 8, 3)

    def test_epoch_is_a_permutation_and_epochs_differ(self, tiny):
        x, y = tiny
        ds = from_arrays(x, y, batch_size=8, seed=3)
        first = sum((_ids(ds[i][0], x) for i in range(len(ds))), [])
        assert sorted(first) == list(range(40))
        ds.on_epoch_end()
        second = sum((_ids(ds[i][0], x) for i in range(len(ds))), [])
        assert sorted(second) == list(range(40)) and first != second

    def test_same_seed_same_batches_other_seed_differs(self, tiny):
        x, y = tiny
        a = from_arrays(x, y, batch_size=8, seed=5)
        b = from_arrays(x, y, batch_size=8, seed=5)
        c = from_arrays(x, y, batch_size=8, seed=6)
        # Random access in any order gives the same batch.
        np.testing.assert_array_equal(a[3][0], b[3][0])
        np.testing.assert_array_equal(a[0][0], b[0][0])
        assert not np.array_equal(a[0][0], c[0][0])

    def test_no_shuffle_keeps_order(self, tiny):
        x, y = tiny
        ds = from_arrays(x, y, batch_size=8, shuffle=False)
        np.testing.assert_array_equal(ds[1][0], x[8:16])
        np.testing.assert_array_equal(ds[1][1], y[8:16])

    @pytest.mark.parametrize("drop, steps, last", [(False, 5, 4), (True, 4, 9)])
    def test_remainder(self, tiny, drop, steps, last):
        x, _ = tiny
        ds = from_arrays(x, batch_size=9, drop_remainder=drop)
        assert len(ds) == steps
        assert len(ds[steps - 1]) == last
        with pytest.raises(IndexError):
            ds[steps]

    def test_repeat_indexes_epochs_globally(self, tiny):
        x, y = tiny
        finite = from_arrays(x, y, batch_size=8, seed=2)
        infinite = from_arrays(x, y, batch_size=8, seed=2, repeat=True)
        assert infinite.num_batches is None
        finite.on_epoch_end()
        finite.on_epoch_end()
        # Batch 1 of epoch 2 is index 2 * 5 + 1 of the infinite stream.
        np.testing.assert_array_equal(infinite[11][0], finite[1][0])

    def test_float_images_in_unit_range_are_converted(self, tiny):
        x, _ = tiny
        floats = x.astype("float32") / 255.0
        ds = from_arrays(floats, batch_size=8, shuffle=False)
        np.testing.assert_array_equal(ds[0], x[:8])

    @pytest.mark.parametrize(
        "images, message",
        [
            (np.zeros((4, 8, 8), "uint8"), "x.shape"),
            (np.zeros((4, 8, 8, 1), "uint8"), "3 colour channels"),
            (np.zeros((4, 8, 8, 3), bool), "x.dtype=bool"),
            (np.full((4, 8, 8, 3), 2.0, "float32"), "max=2.0"),
            (np.full((4, 8, 8, 3), -1, "int32"), "min=-1"),
            (np.zeros((0, 8, 8, 3), "uint8"), "x.shape\\[0\\]=0"),
        ],
    )
    def test_bad_images_raise(self, images, message):
        with pytest.raises(ValueError, match=message):
            from_arrays(images, batch_size=2)

    @pytest.mark.parametrize(
        "labels, kwargs, message",
        [
            (np.arange(4) + 3, {"num_classes": 4}, "label 6"),
            (np.array([0, 1, -1, 2]), {}, "label -1"),
            (np.zeros(4, "float32"), {}, "y.dtype=float32"),
            (np.zeros(3, "int64"), {}, "one label per image"),
            (np.zeros(4, "int64"), {"batch_size": 0}, "batch_size=0"),
            (np.zeros(4, "int64"), {"seed": -1}, "seed=-1"),
        ],
    )
    def test_bad_labels_and_arguments_raise(self, labels, kwargs, message):
        images = np.zeros((4, 8, 8, 3), "uint8")
        kwargs = {"batch_size": 2, **kwargs}
        with pytest.raises(ValueError, match=message):
            from_arrays(images, labels, **kwargs)

    def test_labels_of_shape_n_by_1_are_accepted(self, tiny):
        x, y = tiny
        ds = ArrayDataset(x, y[:, None], batch_size=4, shuffle=False)
        np.testing.assert_array_equal(ds[0][1], y[:4])

    def test_to_tf_dataset_matches_numpy_batches(self, tiny):
        pytest.importorskip("tensorflow")
        x, y = tiny
        ds = from_arrays(x, y, batch_size=16, seed=4)
        batches = list(ds.to_tf_dataset().as_numpy_iterator())
        assert len(batches) == 3 and batches[2][0].shape[0] == 8
        for i, (images, labels) in enumerate(batches):
            np.testing.assert_array_equal(images, ds[i][0])
            np.testing.assert_array_equal(labels, ds[i][1])

    def test_to_tf_dataset_reshuffles_each_pass(self, tiny):
        pytest.importorskip("tensorflow")
        x, _ = tiny
        tf_ds = from_arrays(x, batch_size=40, seed=4).to_tf_dataset()
        first = next(iter(tf_ds.as_numpy_iterator()))
        second = next(iter(tf_ds.as_numpy_iterator()))
        assert sorted(_ids(second, x)) == list(range(40))
        assert not np.array_equal(first, second)

    def test_fit_on_current_backend(self, tiny):
        x, y = tiny
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Flatten(),
                keras.layers.Dense(4),
            ]
        )
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
        history = model.fit(
            from_arrays(x, y, batch_size=8), epochs=2, verbose=0
        )
        assert len(history.history["loss"]) == 2
        assert np.all(np.isfinite(history.history["loss"]))
