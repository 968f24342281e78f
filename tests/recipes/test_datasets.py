"""The recipes read TensorFlow Datasets data sets only where prepared."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_ssl.recipes import datasets


class KerasSslTinyImages(tfds.core.GeneratorBasedBuilder):
    """A data set prepared locally, without downloads."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(6, 0),
            "test": self._generate_examples(3, 1),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            yield i, {"image": image, "label": i % 3}


def test_unprepared_data_set_fails_at_once_naming_its_folder(tmp_path):
    started = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        datasets.load("cifar10", 32, data_dir=str(tmp_path))
    assert time.monotonic() - started < 20
    message = str(info.value)
    assert f"expected it in {tmp_path / 'cifar10'}" in message
    assert f"tfds build cifar10 --data_dir {tmp_path}" in message
    with pytest.raises(FileNotFoundError, match="not prepared under"):
        datasets.load("tfds:keras_ssl_tiny_images", 8, str(tmp_path))
    assert time.monotonic() - started < 20
    # Once prepared there, the same call reads it.
    tfds.builder(
        "keras_ssl_tiny_images", data_dir=tmp_path
    ).download_and_prepare()
    splits = datasets.load("tfds:keras_ssl_tiny_images", 8, str(tmp_path))
    assert splits.x_train.shape == (6, 8, 8, 3)
    assert splits.x_test.dtype == np.uint8
    assert sorted(splits.y_train.tolist()) == [0, 0, 1, 1, 2, 2]
    assert splits.num_classes == 3


def test_unknown_data_set_name():
    with pytest.raises(ValueError, match="Received: 'no_such_data_set'"):
        datasets.load("tfds:no_such_data_set", 32)
