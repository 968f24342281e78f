import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.data import SemiSupervisedDataset
from keras_ssl.data import SupportSampler
from keras_ssl.data import from_arrays
from keras_ssl.data import labeled_subset
from keras_ssl.data import semi_supervised
from keras_ssl.testing import TestCase


def _rows(images, x):
    lookup = {row.tobytes(): i for i, row in enumerate(x)}
    return [lookup[image.tobytes()] for image in images]


class DictModel(keras.Model):
    """Consumes the dict stream like the pretrainers will."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, batch):
        features = {}
        for key in ("unlabeled", "labeled", "support"):
            if key in batch:
                images = keras.ops.cast(batch[key], "float32") / 255.0
                features[key] = self.dense(keras.ops.mean(images, (1, 2)))
        return features

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return sum(keras.ops.mean(v**2) for v in y_pred.values())


class TestSemiSupervised(TestCase):
    def test_dict_batches(self, tiny):
        x, y = tiny
        subset = labeled_subset((x, y), per_class=3)
        stream = semi_supervised(
            x, subset, unlabeled_batch_size=8, labeled_batch_size=4
        )
        assert isinstance(stream, SemiSupervisedDataset)
        assert isinstance(stream, keras.utils.PyDataset)
        assert stream.steps_per_epoch == 5 and len(stream) == 5
        batch = stream[0]
        assert sorted(batch) == ["labeled", "labels", "unlabeled"]
        assert batch["unlabeled"].shape == (8, 8, 8, 3)
        assert batch["unlabeled"].dtype == np.uint8
        assert batch["labeled"].shape == (4, 8, 8, 3)
        assert batch["labeled"].dtype == np.uint8
        assert (
            batch["labels"].shape == (4,) and batch["labels"].dtype == np.int32
        )
        np.testing.assert_array_equal(
            batch["labels"], y[_rows(batch["labeled"], x)]
        )

    def test_steps_come_from_the_unlabeled_stream(self, tiny):
        x, y = tiny
        stream = semi_supervised(
            x[:30], (x, y), unlabeled_batch_size=7, labeled_batch_size=2
        )
        # 30 // 7: the short last batch is dropped.
        assert len(stream) == 4
        seen = sum((_rows(stream[i]["unlabeled"], x) for i in range(4)), [])
        assert len(set(seen)) == 28 and max(seen) < 30

    def test_labeled_stream_cycles_through_whole_passes(self, tiny):
        x, y = tiny
        subset = labeled_subset((x, y), per_class=3)  # 12 images
        stream = semi_supervised(
            x, subset, unlabeled_batch_size=4, labeled_batch_size=4, seed=1
        )
        # 10 unlabeled steps per epoch; 3 labeled steps per labeled pass.
        epoch_rows = [
            _rows(stream[i]["labeled"], subset.x) for i in range(len(stream))
        ]
        stream.on_epoch_end()
        epoch_rows += [
            _rows(stream[i]["labeled"], subset.x) for i in range(len(stream))
        ]
        passes = [sum(epoch_rows[3 * k : 3 * k + 3], []) for k in range(6)]
        for rows in passes:
            assert sorted(rows) == list(range(12))
        assert passes[0] != passes[1]

    def test_epochs_reshuffle_and_seeds_determine(self, tiny):
        x, y = tiny
        make = lambda seed: semi_supervised(  # noqa: E731
            x, (x, y), unlabeled_batch_size=8, labeled_batch_size=4, seed=seed
        )
        a, b, c = make(3), make(3), make(4)
        for key in ("unlabeled", "labeled"):
            np.testing.assert_array_equal(a[2][key], b[2][key])
            assert not np.array_equal(a[2][key], c[2][key])
        first = a[0]["unlabeled"]
        a.on_epoch_end()
        assert not np.array_equal(a[0]["unlabeled"], first)

    def test_repeat_is_a_pure_function_of_the_index(self, tiny):
        x, y = tiny
        kwargs = dict(unlabeled_batch_size=8, labeled_batch_size=4, seed=2)
        finite = semi_supervised(x, (x, y), **kwargs)
        infinite = semi_supervised(x, (x, y), repeat=True, **kwargs)
        assert infinite.num_batches is None and len(infinite) == 5
        finite.on_epoch_end()
        for key, value in finite[3].items():
            np.testing.assert_array_equal(infinite[8][key], value)

    def test_unlabeled_only_stream_yields_dicts(self, tiny):
        x, y = tiny
        stream = semi_supervised((x, y), unlabeled_batch_size=5)
        batch = stream[7]
        assert list(batch) == ["unlabeled"]
        assert batch["unlabeled"].shape == (5, 8, 8, 3)

    def test_support_keys(self, tiny):
        x, y = tiny
        sampler = SupportSampler(
            x,
            y,
            classes_per_batch=2,
            images_per_class=3,
            one_hot=True,
            label_smoothing=0.1,
        )
        stream = semi_supervised(
            x, unlabeled_batch_size=8, support=sampler, repeat=True
        )
        batch = stream[6]
        assert sorted(batch) == [
            "support",
            "support_labels",
            "support_targets",
            "unlabeled",
        ]
        # Global step 6 takes support batch 6.
        images, labels = sampler.sample(6)
        np.testing.assert_array_equal(batch["support"], images)
        np.testing.assert_array_equal(batch["support_labels"], labels)
        self.assertAllClose(
            batch["support_targets"], sampler.one_hot_labels(labels)
        )
        assert batch["support_targets"].shape == (6, 4)

    def test_no_shuffle(self, tiny):
        x, y = tiny
        stream = semi_supervised(
            x,
            (x[:10], y[:10]),
            unlabeled_batch_size=8,
            labeled_batch_size=4,
            shuffle=False,
        )
        np.testing.assert_array_equal(stream[1]["unlabeled"], x[8:16])
        # Labeled: 2 batches per pass, so step 3 is the second batch again.
        np.testing.assert_array_equal(stream[3]["labeled"], x[4:8])

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"unlabeled_batch_size": 41}, "unlabeled_batch_size=41"),
            ({"unlabeled_batch_size": 0}, "unlabeled_batch_size=0"),
            ({"labeled_batch_size": 11}, "labeled_batch_size=11"),
            ({"labeled_batch_size": None}, "labeled_batch_size=None"),
            ({"num_classes": 2}, "num_classes=2"),
            ({"support": "sampler"}, "SupportSampler"),
        ],
    )
    def test_bad_arguments_raise(self, tiny, kwargs, message):
        x, y = tiny
        args = {"unlabeled_batch_size": 8, "labeled_batch_size": 4, **kwargs}
        with pytest.raises(ValueError, match=message):
            semi_supervised(x, (x[:10], y[:10]), **args)

    def test_labeled_batch_size_without_labeled_data_raises(self, tiny):
        x, _ = tiny
        with pytest.raises(ValueError, match="labeled=None"):
            semi_supervised(x, unlabeled_batch_size=8, labeled_batch_size=2)

    def test_bad_images_raise(self, tiny):
        x, y = tiny
        with pytest.raises(ValueError, match="unlabeled"):
            semi_supervised(x[..., :1], unlabeled_batch_size=8)
        with pytest.raises(ValueError, match="labeled"):
            semi_supervised(
                x,
                (x.astype("float32"), y),
                unlabeled_batch_size=8,
                labeled_batch_size=4,
            )

    def test_to_tf_dataset_matches(self, tiny):
        x, y = tiny
        sampler = SupportSampler(x, y, classes_per_batch=2, images_per_class=2)
        stream = semi_supervised(
            x,
            (x, y),
            unlabeled_batch_size=8,
            labeled_batch_size=4,
            support=sampler,
        )
        dataset = stream.to_tf_dataset()
        assert int(dataset.cardinality()) == 5
        assert dataset.element_spec["unlabeled"].shape == (8, 8, 8, 3)
        for index, batch in enumerate(dataset.as_numpy_iterator()):
            for key, value in stream[index].items():
                np.testing.assert_array_equal(batch[key], value)

    def test_tf_data_sources(self, tiny):
        x, y = tiny
        sampler = SupportSampler(x, y, classes_per_batch=4, images_per_class=1)
        unlabeled = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
        stream = semi_supervised(
            unlabeled,
            (x[:12], y[:12]),  # arrays are converted on the tf.data path
            unlabeled_batch_size=8,
            labeled_batch_size=3,
            support=sampler,
            seed=5,
        )
        assert isinstance(stream, tf.data.Dataset)
        assert int(stream.cardinality()) == 5
        spec = stream.element_spec
        assert spec["unlabeled"] == tf.TensorSpec((8, 8, 8, 3), tf.uint8)
        assert spec["labeled"] == tf.TensorSpec((3, 8, 8, 3), tf.uint8)
        assert spec["labels"] == tf.TensorSpec((3,), tf.int32)
        assert spec["support"].shape == (4, 8, 8, 3)
        batches = list(stream.as_numpy_iterator())
        seen = sum((_rows(b["unlabeled"], x) for b in batches), [])
        assert sorted(seen) == list(range(40))
        for batch in batches:
            np.testing.assert_array_equal(
                batch["labels"], y[_rows(batch["labeled"], x)]
            )
        # Support batches go on counting across passes.
        again = next(stream.as_numpy_iterator())
        np.testing.assert_array_equal(
            again["support"], sampler.sample(len(batches))[0]
        )
        # Same seed, same stream.
        again = semi_supervised(
            unlabeled,
            (x[:12], y[:12]),
            unlabeled_batch_size=8,
            labeled_batch_size=3,
            seed=5,
        )
        first = next(again.as_numpy_iterator())
        np.testing.assert_array_equal(
            first["unlabeled"], batches[0]["unlabeled"]
        )

    def test_tf_data_bad_sources_raise(self, tiny):
        x, y = tiny
        floats = tf.data.Dataset.from_tensor_slices(x / 255.0)
        with pytest.raises(ValueError, match="uint8"):
            semi_supervised(floats, unlabeled_batch_size=8)
        images = tf.data.Dataset.from_tensor_slices(x)
        with pytest.raises(ValueError, match="pairs"):
            semi_supervised(
                x, images, unlabeled_batch_size=8, labeled_batch_size=2
            )
        labeled = tf.data.Dataset.from_tensor_slices((x, y))
        stream = semi_supervised(
            images,
            labeled,
            unlabeled_batch_size=8,
            labeled_batch_size=2,
            num_classes=3,
        )
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
            list(stream.as_numpy_iterator())

    @pytest.mark.parametrize("source", ["pair", "object"])
    def test_monitor_labels_yields_the_unlabeled_labels(self, tiny, source):
        x, y = tiny
        unlabeled = (x, y) if source == "pair" else from_arrays(x, y)
        kwargs = dict(unlabeled_batch_size=8, labeled_batch_size=4, seed=3)
        plain = semi_supervised(unlabeled, (x[:12], y[:12]), **kwargs)
        stream = semi_supervised(
            unlabeled, (x[:12], y[:12]), monitor_labels=True, **kwargs
        )
        assert "unlabeled_labels" not in plain[0]
        stream.on_epoch_end()
        plain.on_epoch_end()
        for index in range(len(stream)):
            batch = stream[index]
            labels = batch["unlabeled_labels"]
            assert labels.shape == (8,) and labels.dtype == np.int32
            # The labels belong to the very images of the batch...
            np.testing.assert_array_equal(
                labels, y[_rows(batch["unlabeled"], x)]
            )
            # ... and monitoring changes nothing else in the stream.
            for key, value in plain[index].items():
                np.testing.assert_array_equal(batch[key], value)
        dataset = stream.to_tf_dataset()
        first = next(dataset.as_numpy_iterator())
        np.testing.assert_array_equal(
            first["unlabeled_labels"], y[_rows(first["unlabeled"], x)]
        )

    def test_monitor_labels_on_the_tf_data_path(self, tiny):
        x, y = tiny
        dicts = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
        for unlabeled, labeled in (
            (dicts, (x[:12], y[:12])),
            ((x, y), tf.data.Dataset.from_tensor_slices((x[:12], y[:12]))),
        ):
            stream = semi_supervised(
                unlabeled,
                labeled,
                unlabeled_batch_size=8,
                labeled_batch_size=3,
                monitor_labels=True,
            )
            spec = stream.element_spec["unlabeled_labels"]
            assert spec == tf.TensorSpec((8,), tf.int32)
            batches = list(stream.as_numpy_iterator())
            assert len(batches) == 5
            for batch in batches:
                np.testing.assert_array_equal(
                    batch["unlabeled_labels"],
                    y[_rows(batch["unlabeled"], x)],
                )

    def test_image_ids_name_each_image(self, tiny):
        x, y = tiny
        subset = labeled_subset((x, y), per_class=3, seed=0)
        kwargs = dict(unlabeled_batch_size=8, labeled_batch_size=4, seed=3)
        plain = semi_supervised(x, subset, **kwargs)
        stream = semi_supervised(
            x, subset, image_ids=True, labeled_ids=subset.indices, **kwargs
        )
        assert "unlabeled_ids" not in plain[0]
        for index in range(len(stream)):
            batch = stream[index]
            for part in ("unlabeled", "labeled"):
                ids = batch[f"{part}_ids"]
                assert ids.dtype == np.int32
                # The ids are the images' rows in the unlabeled source.
                np.testing.assert_array_equal(ids, _rows(batch[part], x))
            for key, value in plain[index].items():
                np.testing.assert_array_equal(batch[key], value)
        first = next(stream.to_tf_dataset().as_numpy_iterator())
        np.testing.assert_array_equal(
            first["unlabeled_ids"], _rows(first["unlabeled"], x)
        )
        # Labeled images without given ids are unknown: -1.
        unknown = semi_supervised(x, subset, image_ids=True, **kwargs)
        assert np.all(unknown[0]["labeled_ids"] == -1)

    def test_image_ids_on_the_tf_data_path(self, tiny):
        x, y = tiny
        stream = semi_supervised(
            tf.data.Dataset.from_tensor_slices(x),
            (x[:12], y[:12]),
            unlabeled_batch_size=8,
            labeled_batch_size=3,
            image_ids=True,
            labeled_ids=np.arange(12) + 1000,
        )
        assert stream.element_spec["unlabeled_ids"].dtype == tf.int32
        for batch in stream.as_numpy_iterator():
            np.testing.assert_array_equal(
                batch["unlabeled_ids"], _rows(batch["unlabeled"], x)
            )
            np.testing.assert_array_equal(
                batch["labeled_ids"],
                np.array(_rows(batch["labeled"], x)) + 1000,
            )

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"labeled_ids": [1, 2]}, "image_ids=True"),
            (
                {"image_ids": True, "labeled_ids": [1, 2]},
                r"= \(12,\)\. Received: labeled_ids of shape \(2,\)",
            ),
            (
                {"image_ids": True, "labeled_ids": np.full(12, -5)},
                r"\[-1, 2\*\*31",
            ),
        ],
    )
    def test_bad_labeled_ids_raise(self, tiny, kwargs, message):
        x, y = tiny
        with pytest.raises(ValueError, match=message):
            semi_supervised(
                x,
                (x[:12], y[:12]),
                unlabeled_batch_size=8,
                labeled_batch_size=4,
                **kwargs,
            )

    def test_monitor_labels_needs_labels(self, tiny):
        x, y = tiny
        kwargs = dict(unlabeled_batch_size=8, monitor_labels=True)
        for unlabeled in (x, (x,), from_arrays(x)):
            with pytest.raises(ValueError, match="monitor_labels=True"):
                semi_supervised(unlabeled, **kwargs)
        images = tf.data.Dataset.from_tensor_slices(x)
        with pytest.raises(ValueError, match="pairs"):
            semi_supervised(images, **kwargs)
        with pytest.raises(ValueError, match="unlabeled_labels"):
            semi_supervised((x, y), num_classes=3, **kwargs)
        with pytest.raises(ValueError, match="unlabeled_labels"):
            semi_supervised((x, y[:10]), **kwargs)
        # On the tf.data path array labels are checked at once, dataset
        # labels as they are read.
        labeled = tf.data.Dataset.from_tensor_slices((x, y % 3))
        with pytest.raises(ValueError, match="unlabeled_labels"):
            semi_supervised(
                (x, y), labeled, labeled_batch_size=2, num_classes=3, **kwargs
            )
        pairs = tf.data.Dataset.from_tensor_slices((x, y))
        stream = semi_supervised(pairs, num_classes=3, **kwargs)
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
            list(stream.as_numpy_iterator())

    @pytest.mark.parametrize("with_support", [False, True])
    def test_fit_consumes_the_dict_stream(self, tiny, with_support):
        x, y = tiny
        support = None
        if with_support:
            support = SupportSampler(
                x, y, classes_per_batch=2, images_per_class=2
            )
        stream = semi_supervised(
            from_arrays(x),
            (x, y),
            unlabeled_batch_size=8,
            labeled_batch_size=4,
            support=support,
        )
        model = DictModel()
        model.compile("sgd")
        history = model.fit(stream, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert len(history.history["loss"]) == 2
