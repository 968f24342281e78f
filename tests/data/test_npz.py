import numpy as np
import pytest

from keras_ssl.data import load_npz
from keras_ssl.testing import TestCase


class TestLoadNpz(TestCase):
    def test_round_trip_with_file_names(self, tiny, tmp_path):
        x, y = tiny
        names = np.array([f"img_{i}.png" for i in range(40)])
        path = str(tmp_path / "data.npz")
        np.savez(path, x=x, y=y.astype("int64"), filenames=names)
        loaded_x, loaded_y = load_npz(path)
        np.testing.assert_array_equal(loaded_x, x)
        np.testing.assert_array_equal(loaded_y, y)
        assert loaded_y.dtype == np.int32
        _, _, loaded_names = load_npz(path, filenames_key="filenames")
        np.testing.assert_array_equal(loaded_names, names)

    def test_other_keys_and_no_labels(self, tiny, tmp_path):
        x, _ = tiny
        path = str(tmp_path / "data.npz")
        np.savez(path, images=x)
        images, labels = load_npz(path, x_key="images", y_key=None)
        np.testing.assert_array_equal(images, x)
        assert labels is None

    def test_missing_key_names_the_argument(self, tiny, tmp_path):
        x, _ = tiny
        path = str(tmp_path / "data.npz")
        np.savez(path, x=x)
        with pytest.raises(ValueError, match="y_key='y'"):
            load_npz(path)

    def test_bad_contents_and_path_raise(self, tmp_path):
        path = str(tmp_path / "data.npz")
        np.savez(path, x=np.zeros((2, 4, 4, 3)) + 7.0, y=np.zeros(2, "int64"))
        with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
            load_npz(path)
        with pytest.raises(ValueError, match="path="):
            load_npz(str(tmp_path / "missing.npz"))
