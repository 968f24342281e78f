import os

import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import from_directory
from keras_ssl.testing import TestCase


def _write(path, image, fmt):
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, encode(image))


def _make_tree(root, size=(6, 6)):
    """Classes 'cat' (2 PNG + 1 nested JPEG) and 'ant' (1 PNG, 1 JPEG)."""
    rng = np.random.default_rng(0)
    images = {}
    for rel, fmt in [
        ("cat/a.png", "png"),
        ("cat/b.PNG", "png"),
        ("cat/more/c.jpg", "jpeg"),
        ("ant/x.png", "png"),
        ("ant/y.jpeg", "jpeg"),
    ]:
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        _write(os.path.join(root, rel), image, fmt)
        images[rel] = image
    # Not an image: ignored.
    (root / "cat" / "notes.txt").write_text("hello")
    return images


class TestFromDirectory(TestCase):
    def test_classes_sorted_labels_and_pixels(self, tmp_path):
        images = _make_tree(tmp_path)
        dataset = from_directory(str(tmp_path))
        assert dataset.class_names == ["ant", "cat"]
        pairs = list(dataset.as_numpy_iterator())
        assert [int(label) for _, label in pairs] == [0, 0, 1, 1, 1]
        relative = [
            os.path.relpath(p, tmp_path).replace(os.sep, "/")
            for p in dataset.file_paths
        ]
        assert relative == [
            "ant/x.png",
            "ant/y.jpeg",
            "cat/a.png",
            "cat/b.PNG",
            "cat/more/c.jpg",
        ]
        for (image, _), rel in zip(pairs, relative):
            assert image.dtype == np.uint8 and image.shape == (6, 6, 3)
            if rel.lower().endswith(".png"):  # lossless
                np.testing.assert_array_equal(image, images[rel])
        assert dataset.element_spec[1].dtype == tf.int32

    def test_batched_resized_and_shuffled(self, tmp_path):
        _make_tree(tmp_path)
        dataset = from_directory(
            str(tmp_path), image_size=4, batch_size=5, shuffle=True, seed=1
        )
        images, labels = next(dataset.as_numpy_iterator())
        assert images.shape == (5, 4, 4, 3) and images.dtype == np.uint8
        assert sorted(labels.tolist()) == [0, 0, 1, 1, 1]

    @pytest.mark.parametrize("kind", ["garbage", "truncated_jpeg", "png"])
    def test_corrupt_file_raises_naming_it(self, tmp_path, kind):
        _make_tree(tmp_path)
        image = np.full((8, 8, 3), 90, np.uint8)
        if kind == "garbage":
            name, data = "broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg"
        elif kind == "truncated_jpeg":
            data = tf.io.encode_jpeg(image).numpy()
            name, data = "broken.jpg", data[: len(data) // 2]
        else:
            data = tf.io.encode_png(image).numpy()
            name, data = "broken.png", data[: len(data) // 2]
        (tmp_path / "cat" / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            from_directory(str(tmp_path))

    def test_skip_corrupt_warns_and_skips(self, tmp_path):
        _make_tree(tmp_path)
        (tmp_path / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        with pytest.warns(UserWarning, match="broken.png"):
            dataset = from_directory(str(tmp_path), skip_corrupt=True)
        assert len(list(dataset.as_numpy_iterator())) == 5
        assert not any("broken" in p for p in dataset.file_paths)

    def test_skip_corrupt_without_validation_drops_in_pipeline(self, tmp_path):
        _make_tree(tmp_path)
        (tmp_path / "ant" / "broken.png").write_bytes(b"garbage")
        dataset = from_directory(
            str(tmp_path), skip_corrupt=True, validate=False
        )
        assert len(list(dataset.as_numpy_iterator())) == 5

    def test_different_sizes_need_image_size(self, tmp_path):
        _make_tree(tmp_path)
        image = np.zeros((5, 7, 3), np.uint8)
        _write(str(tmp_path / "ant" / "odd.png"), image, "png")
        with pytest.raises(ValueError, match="image_size=None"):
            from_directory(str(tmp_path), batch_size=2)
        dataset = from_directory(str(tmp_path), batch_size=6, image_size=6)
        images, _ = next(dataset.as_numpy_iterator())
        assert images.shape == (6, 6, 6, 3)

    def test_empty_and_missing_directories_raise(self, tmp_path):
        with pytest.raises(ValueError, match="has none"):
            from_directory(str(tmp_path))
        (tmp_path / "dog").mkdir()
        with pytest.raises(ValueError, match="dog.*holds no JPEG"):
            from_directory(str(tmp_path))
        with pytest.raises(ValueError, match="not a directory"):
            from_directory(str(tmp_path / "missing"))

    def test_grayscale_files_become_rgb(self, tmp_path):
        gray = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
        _write(str(tmp_path / "only" / "g.png"), gray, "png")
        image, _ = next(from_directory(str(tmp_path)).as_numpy_iterator())
        np.testing.assert_array_equal(image, np.repeat(gray, 3, axis=-1))
