import os

import numpy as np
import pytest

from keras_ssl.data import streaming
from keras_ssl.testing import TestCase


class TestImageTable(TestCase):
    def test_folder_lists_files_in_class_order(self, image_folder):
        root, names = image_folder
        table = streaming.list_folder(os.path.join(root, "train"))
        assert table.class_names == sorted(table.class_names)
        assert table.num_classes == 4
        # 48 images and the corrupt file; nothing is read to list them.
        assert len(table) == 49
        np.testing.assert_array_equal(table.ids, np.arange(49))
        assert np.all(np.diff(table.labels) >= 0)
        for name, label in zip(table.names, table.labels):
            assert name.decode().startswith(table.class_names[label])
        assert not table.is_records

    def test_select_by_name_keeps_table_order_and_ids(self, image_folder):
        root, names = image_folder
        table = streaming.list_folder(os.path.join(root, "train"))
        wanted = [names[9], names[2], names[30]]
        subset = streaming.select_by_name(table, wanted, "subset.txt")
        assert sorted(n.decode() for n in subset.names) == sorted(wanted)
        assert np.all(np.diff(subset.ids) > 0)
        np.testing.assert_array_equal(table.names[subset.ids], subset.names)
        np.testing.assert_array_equal(table.labels[subset.ids], subset.labels)

    def test_missing_names_raise(self, image_folder):
        table = streaming.list_folder(os.path.join(image_folder[0], "train"))
        with pytest.raises(ValueError, match="n0_missing.JPEG"):
            streaming.select_by_name(table, ["n0_missing.JPEG"], "subset.txt")

    def test_subset_file_by_name_or_path(self, tmp_path):
        with pytest.raises(ValueError, match="1percent.txt") as error:
            streaming.subset_file("1pct", str(tmp_path))
        assert str(tmp_path / "1percent.txt") in str(error.value)
        (tmp_path / "10percent.txt").write_text(
            "# comment\nn1_1.JPEG\n\ntrain/n1_2.JPEG\n"
        )
        path = streaming.subset_file("10pct", str(tmp_path))
        assert path == str(tmp_path / "10percent.txt")
        assert streaming.read_subset_file(path) == ["n1_1.JPEG", "n1_2.JPEG"]
        assert streaming.subset_file("my.txt", str(tmp_path)) == "my.txt"
        with pytest.raises(ValueError, match="labels='my.txt'"):
            streaming.read_subset_file("my.txt")

    def test_balanced_subset_matches_labeled_subset(self, image_folder):
        from keras_ssl.data import labeled_subset

        table = streaming.list_folder(os.path.join(image_folder[0], "train"))
        subset = streaming.select_balanced(table, per_class=3, seed=5)
        fake = np.zeros((len(table), 1, 1, 3), np.uint8)
        reference = labeled_subset((fake, table.labels), per_class=3, seed=5)
        np.testing.assert_array_equal(subset.ids, reference.indices)

    def test_tfds_records_by_byte_range(self, tfds_dir):
        table = streaming.list_tfds("imagenet2012", "train", tfds_dir)
        assert table.is_records and len(table) == 32
        assert table.labels is None
        labeled = streaming.read_labels(table)
        assert sorted(np.bincount(labeled.labels)) == [8, 8, 8, 8]
        assert len(set(labeled.names.tolist())) == 32
        with pytest.raises(ValueError, match="split='test'"):
            streaming.list_tfds("imagenet2012", "test", tfds_dir)
