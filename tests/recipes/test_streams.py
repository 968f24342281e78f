"""The recipes' streamed data: ImageNet-like folders and tfds splits, the
papers' labeled subsets by file name, each pretrainer's batches, exact
resume and the streamed evaluations."""

import dataclasses
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from keras_ssl.recipes.streams import RecipeStreams
from keras_ssl.testing import TestCase
from tests.data.streaming_fixtures import prepare_tfds


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return prepare_tfds(str(tmp_path_factory.mktemp("tfds")))


def config(data_dir, dataset="folder", **overrides):
    values = dict(
        dataset=dataset, data_dir=data_dir, image_size=16, seed=0, labels="1pct"
    )
    return SimpleNamespace(**{**values, **overrides})


def shrunk_encoder(size=16, width=8):
    """The presets' ResNet shrunk to one strided convolution: the data
    path is what these tests run end to end."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, x)


class TestSubsets(TestCase):
    def test_folder_subset_by_file_name(self, folder):
        data = RecipeStreams(config(folder))
        assert data.num_classes == 4 and data.num_train == 49
        assert data.num_labeled == 12
        names = {n.decode() for n in data.labeled.names}
        with open(os.path.join(folder, "1percent.txt")) as f:
            listed = f.read().split()
        assert names == set(listed)
        # The labeled images are rows of the training table.
        np.testing.assert_array_equal(
            data.train.names[data.labeled.ids], data.labeled.names
        )
        # A config without `labels`: 1% of the labels is SimCLR's file.
        fraction = config(folder, labels=None, labeled_fraction=0.01)
        fraction.labeled_per_class = None
        assert RecipeStreams(fraction).identity() == data.identity()
        per_class = config(folder, labels=None, labeled_per_class=2)
        assert RecipeStreams(per_class).num_labeled == 8

    def test_missing_subset_file_says_where_to_put_it(self, folder):
        with pytest.raises(ValueError, match="10percent.txt") as error:
            RecipeStreams(config(folder, labels="10pct"))
        assert os.path.join(folder, "10percent.txt") in str(error.value)

    def test_tfds_subsets(self, tfds_dir, tmp_path):
        data = RecipeStreams(config(tfds_dir, "imagenet2012"))
        assert data.num_classes == 1000 and data.num_train == 32
        # imagenet2012_subset/1pct: its own records, not training rows.
        assert data.num_labeled == 8
        np.testing.assert_array_equal(data.labeled.ids, np.full(8, -1))
        assert sorted(np.bincount(data.labeled.labels)) == [2, 2, 2, 2]
        with pytest.raises(ValueError, match="imagenet2012_subset/10pct"):
            RecipeStreams(config(tfds_dir, "imagenet2012", labels="10pct"))
        listed = tmp_path / "mine.txt"
        listed.write_text("n01440764_3.JPEG\nn01491361_7.JPEG\n")
        data = RecipeStreams(
            config(tfds_dir, "imagenet2012", labels=str(listed))
        )
        assert sorted(n.decode() for n in data.labeled.names) == [
            "n01440764_3.JPEG",
            "n01491361_7.JPEG",
        ]
        assert np.all(data.labeled.ids >= 0)

    def test_bad_config_raises(self, folder):
        with pytest.raises(ValueError, match="dataset='cifar10'"):
            RecipeStreams(config(folder, "cifar10"))
        with pytest.raises(ValueError, match="data_dir=None"):
            RecipeStreams(config(None))


class TestPretrainStreams(TestCase):
    @pytest.mark.parametrize("dataset", ["folder", "imagenet2012"])
    def test_resume_after_interruption(self, folder, tfds_dir, dataset):
        root = folder if dataset == "folder" else tfds_dir

        def stream(start_step):
            # A new process would rebuild everything from the config.
            data = RecipeStreams(config(root, dataset))
            stream = data.pretrain_stream(
                8, 4, support=(2, 2), image_ids=True, monitor_labels=True
            )
            batches = stream.to_tf_dataset(start_step=start_step)
            return list(batches.take(5 - start_step).as_numpy_iterator())

        uninterrupted, resumed = stream(0), stream(3)
        for a, b in zip(uninterrupted[3:], resumed):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def _fit(model, stream, steps=2):
    model.fit(
        stream.to_tf_dataset(),
        steps_per_epoch=steps,
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    return model


def _views(preset):
    from keras_ssl.layers import Views

    return Views(Views.preset_specs(preset.views, size=16), seed=0)


@pytest.mark.slow
class TestPresetsEndToEnd(TestCase):
    """Each `imagenet()` preset's losses and views with a shrunk network,
    2 steps per stage on the streamed folder, then the evaluations."""

    def test_simclrv2(self, folder):
        from keras_ssl.layers import ProjectionHead
        from keras_ssl.models import Distiller
        from keras_ssl.models import SimCLRv2Pretrainer
        from keras_ssl.recipes.simclrv2 import SimCLRv2Config

        preset = SimCLRv2Config.imagenet()
        data = RecipeStreams(config(folder, seed=preset.seed))
        model = SimCLRv2Pretrainer(
            shrunk_encoder(),
            head=ProjectionHead(num_layers=preset.head_layers, output_dim=8),
            views=_views(preset),
            temperature=preset.temperature,
            memory_size=16,
            num_classes=data.num_classes,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
        _fit(model, data.pretrain_stream(8, 4, image_ids=True))
        teacher = self._finetune(model.encoder, data)
        student = self._finetune(shrunk_encoder(), data, steps=0)
        distiller = Distiller(
            teacher, student, temperature=preset.distill_temperature
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.01), run_eagerly=True
        )
        _fit(distiller, data.pretrain_stream(8, seed_offset=1))
        self._evaluate(student, data)
        knn = data.evaluate_knn(model.encoder, batch_size=6, k=3)
        self._check(knn)

    def test_paws(self, folder):
        from keras_ssl.models import PAWSPretrainer
        from keras_ssl.recipes.paws import PAWSConfig

        preset = PAWSConfig.imagenet()
        data = RecipeStreams(config(folder, labels="1pct"))
        model = PAWSPretrainer(
            shrunk_encoder(size=None),
            num_classes=data.num_classes,
            views=_views(preset),
            support_views=preset.support_views,
            temperature=preset.temperature,
            sharpen_temperature=preset.sharpen_temperature,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
        _fit(model, data.pretrain_stream(8, support=(4, 2)))
        self._evaluate(self._finetune(model.encoder, data), data)

    def test_semppl(self, folder):
        from keras_ssl.models import SemPPLPretrainer
        from keras_ssl.recipes.semppl import SemPPLConfig

        preset = SemPPLConfig.imagenet()
        data = RecipeStreams(config(folder))
        model = SemPPLPretrainer(
            shrunk_encoder(size=None),
            num_classes=data.num_classes,
            views=_views(preset),
            queue_size=24,
            k=preset.k,
            num_semantic_positives=preset.num_semantic_positives,
            seed=0,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
        _fit(model, data.pretrain_stream(8, 4, monitor_labels=True))
        self._evaluate(self._finetune(model.encoder, data), data)

    def _finetune(self, encoder, data, steps=2):
        from keras_ssl.models import FineTuner

        classifier = FineTuner(
            encoder, num_classes=data.num_classes, image_size=16, seed=0
        )
        classifier.compile(
            optimizer=keras.optimizers.SGD(0.01), run_eagerly=True
        )
        if steps:
            _fit(classifier, data.labeled_stream(4), steps)
        return classifier

    def _evaluate(self, classifier, data):
        self._check(data.evaluate_classifier(classifier, batch_size=6))

    def _check(self, result):
        assert result["examples"] == 16
        assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
        # 4 classes: the label is always among the top 5.
        assert result["top5"] == 1.0


def test_config_dataclass_is_read_by_attribute(folder):
    @dataclasses.dataclass
    class Config:
        dataset: str = "folder"
        data_dir: str = folder
        image_size: int = 16
        seed: int = 0
        labels: str = "1pct"

    data = RecipeStreams(Config())
    batch = next(data.labeled_stream(4).to_tf_dataset().as_numpy_iterator())
    assert batch[0].shape == (4, 16, 16, 3) and batch[1].shape == (4,)
