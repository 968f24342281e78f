import math

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl.data import SupportSampler
from keras_ssl.data import semi_supervised
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.losses import paws
from keras_ssl.models import PAWSPretrainer
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess
from tests.models.conftest import tiny_encoder

BACKEND = keras.backend.backend()
tf_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="feeds tf.data (JAX: test_jax_training.py)"
)


def make_model(support_views=1, prediction_head=None, **kwargs):
    # 2 x 16 px global views and 2 x 9 px small views (paws_cifar, 16 px).
    specs = Views.preset_specs("paws_cifar", size=16)[:4]
    return PAWSPretrainer(
        tiny_encoder(size=None),
        num_classes=4,
        head=ProjectionHead(num_layers=3, output_dim=6, hidden_dim=8),
        views=Views(specs, seed=1),
        prediction_head=prediction_head,
        support_views=support_views,
        **kwargs,
    )


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "unlabeled": rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
        "support": rng.integers(0, 256, (6, 16, 16, 3)).astype("uint8"),
        # 3 of the 4 classes, 2 images each, as a SupportSampler gives.
        "support_labels": np.array([0, 0, 2, 2, 3, 3], "int32"),
    }


def tiny_stream():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    y = np.array([0, 1, 2, 3] * 2, "int32")
    sampler = SupportSampler(
        x, y, classes_per_batch=2, images_per_class=2, num_classes=4
    )
    return semi_supervised(x, unlabeled_batch_size=4, support=sampler)


class TestPAWSPretrainer(TestCase):
    @tf_only
    def test_fit_on_a_support_stream(self):
        model = make_model(support_views=2)
        model.compile(
            optimizer=keras_ssl.optimizers.LARS(0.1), jit_compile=False
        )
        before = [np.array(w) for w in model.encoder.trainable_weights]
        stream = tiny_stream().to_tf_dataset()
        history = model.fit(stream, epochs=2, verbose=0, shuffle=False).history
        for name in PAWSPretrainer.metric_names:
            assert name in history, name
            assert np.all(np.isfinite(history[name])), name
        # 2 classes per support batch: H(p_bar) <= log 2.
        assert 0.0 <= history["me_max"][-1] <= math.log(2) + 1e-6
        assert 0.5 <= history["target_confidence"][-1] <= 1.0
        assert 0.0 <= history["support_accuracy"][-1] <= 1.0
        self.assertAllClose(
            history["loss"][-1],
            history["cross_entropy"][-1] - history["me_max"][-1],
            atol=1e-5,
        )
        after = model.encoder.trainable_weights
        assert any(
            np.abs(np.array(a) - b).max() > 0 for a, b in zip(after, before)
        )

    @pytest.mark.parametrize("support_views", [1, 2])
    def test_loss_matches_paws_in_eval_mode(self, support_views):
        # In inference mode every view is a deterministic resize, and BN
        # uses its moving statistics: the step's loss must be eq. (4) on
        # the model's own embeddings of those views.
        model = make_model(support_views=support_views)
        batch = make_batch()
        views = model.views(batch["unlabeled"] / 255.0, training=False)
        support = batch["support"] / 255.0
        z = [model(v)["projection"] for v in views]
        z_support = model(support)["projection"]
        labels = batch["support_labels"]
        expected, metrics = paws(
            z,
            keras.ops.concatenate([z_support] * support_views, 0),
            np.concatenate([labels] * support_views),
            num_classes=4,
            return_metrics=True,
        )
        loss, logs = model.compute_ssl_loss(batch, training=False)
        self.assertAllClose(loss, expected, atol=1e-5)
        for name in ("cross_entropy", "me_max", "target_confidence"):
            self.assertAllClose(logs[name], metrics[name], atol=1e-5)

    def test_grouped_views_equal_listed_views(self):
        batch = make_batch()
        listed = make_model()
        loss, _ = listed.compute_ssl_loss(batch, training=False)
        grouped = make_model()
        grouped.set_weights(listed.get_weights())
        grouped.views.group_by_size = True
        self.assertAllClose(
            grouped.compute_ssl_loss(batch, training=False)[0], loss, atol=1e-6
        )

    def test_support_accuracy_is_leave_one_image_out(self):
        # Classes 0 and 1, two images each; each image is embedded close
        # to the other image of its class: accuracy 1. With one view per
        # image and one image per class, no neighbour is left: accuracy 0.
        model = make_model(support_views=2)
        z = np.array(
            [[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]], "float32"
        )
        labels = np.array([0, 0, 1, 1], "int32")
        accuracy = model._support_accuracy(np.concatenate([z, z]), labels)
        self.assertAllClose(accuracy, 1.0)
        swapped = np.array([0, 1, 0, 1], "int32")
        accuracy = model._support_accuracy(np.concatenate([z, z]), swapped)
        self.assertAllClose(accuracy, 0.0)
        single = make_model(support_views=1)
        accuracy = single._support_accuracy(z[[0, 2]], labels[[0, 2]])
        self.assertAllClose(accuracy, 0.0)

    def test_prediction_head(self):
        prediction_head = keras.Sequential(
            [
                keras.layers.BatchNormalization(),
                keras.layers.Dense(5),
                keras.layers.ReLU(),
                keras.layers.Dense(6),
            ]
        )
        model = make_model(prediction_head=prediction_head)
        batch = make_batch()
        outputs = model(batch["unlabeled"])
        self.assertShape(outputs["prediction"], (4, 6))
        trainable = {id(v) for v in model.trainable_variables}
        assert all(id(v) in trainable for v in prediction_head.weights[1:2])
        loss, _ = model.compute_ssl_loss(batch, training=True)
        assert np.isfinite(float(loss))

    def test_prediction_head_targets_come_from_the_projection(self):
        # As in the reference code: the views and the support are
        # classified after the prediction head, the targets are built from
        # the projections before it.
        model = make_model(
            prediction_head=keras.Sequential(
                [
                    keras.layers.Dense(5, activation="relu"),
                    keras.layers.Dense(6),
                ]
            )
        )
        batch = make_batch()
        views = model.views(batch["unlabeled"] / 255.0, training=False)
        outputs = [model(v) for v in views]
        support = model(batch["support"] / 255.0)
        labels = batch["support_labels"]
        expected = paws(
            [o["prediction"] for o in outputs],
            support["prediction"],
            labels,
            num_classes=4,
            target_views=[o["projection"] for o in outputs[:2]],
            target_support=support["projection"],
        )
        loss, _ = model.compute_ssl_loss(batch, training=False)
        self.assertAllClose(loss, expected, atol=1e-5)
        from_predictions = paws(
            [o["prediction"] for o in outputs],
            support["prediction"],
            labels,
            num_classes=4,
        )
        assert abs(float(loss) - float(from_predictions)) > 1e-4

    def test_call_outputs(self):
        model = make_model()
        outputs = model(make_batch()["unlabeled"])
        self.assertShape(outputs["embedding"], (4, 8))
        self.assertShape(outputs["projection"], (4, 6))
        assert "prediction" not in outputs

    def test_saving_and_config(self):
        model = make_model(support_views=2, label_smoothing=0.0)
        self.run_model_saving(model, make_batch()["unlabeled"])
        rebuilt = self.run_config_round_trip(model)
        assert rebuilt.support_views == 2
        assert rebuilt.support_augment.specs == model.views.specs[:2]

    def test_batch_without_support_raises(self):
        model = make_model()
        batch = make_batch()
        with pytest.raises(ValueError, match="'support'.*Received: dict"):
            model.compute_ssl_loss(
                {"unlabeled": batch["unlabeled"]}, training=True
            )
        with pytest.raises(ValueError, match="Received: ndarray"):
            model.compute_ssl_loss(batch["unlabeled"], training=True)

    @tf_only
    def test_fit_without_support_raises_before_training(self):
        import tensorflow as tf

        model = make_model()
        model.compile(optimizer="sgd", jit_compile=False)
        before = [np.array(w) for w in model.weights]
        ds = tf.data.Dataset.from_tensors(
            {"unlabeled": make_batch()["unlabeled"]}
        )
        with pytest.raises(ValueError, match="support_labels"):
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
        for a, b in zip(model.weights, before):
            self.assertAllClose(a, b)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"temperature": 0}, "temperature=0"),
            ({"temperature": -1.0}, "temperature=-1.0"),
            ({"sharpen_temperature": 0}, "sharpen_temperature=0"),
            ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
            ({"support_views": 3}, "support_views=3"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            make_model(**kwargs)

    def test_bad_num_classes_and_views(self):
        with pytest.raises(ValueError, match="num_classes=1"):
            PAWSPretrainer(tiny_encoder(size=None), num_classes=1)
        with pytest.raises(ValueError, match="two global views"):
            PAWSPretrainer(
                tiny_encoder(size=None),
                num_classes=3,
                views=Views(Views.preset_specs("paws_cifar", 16)[:1]),
            )


def _distributed_model(sync):
    """The model of the 1-vs-2 replica test, in its own process or here."""
    # Deterministic views, so that 1 and 2 replicas see the same images.
    common = dict(
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        flip=False,
        color_strength=0.0,
        p_grayscale=0.0,
        blur_p=0.0,
    )
    large = keras_ssl.layers.ViewSpec(size=16, **common)
    small = keras_ssl.layers.ViewSpec(size=8, **common)
    model = PAWSPretrainer(
        tiny_encoder(size=None, synchronized=sync),
        num_classes=4,
        head=ProjectionHead(
            3, output_dim=6, hidden_dim=8, synchronized_bn=sync
        ),
        views=Views([large, large, small, small]),
        support_views=2,
    )
    model.compile(
        optimizer=keras_ssl.optimizers.LARS(0.5, weight_decay=1e-4),
        jit_compile=False,
    )
    return model


def _distributed_data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = {
        "unlabeled": rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
        "support": rng.integers(0, 256, (6, 16, 16, 3)).astype("uint8"),
        "support_labels": np.array([0, 0, 1, 1, 3, 3], "int32"),
    }
    return tf.data.Dataset.from_tensors(batch)


_TWO_REPLICAS = """
from tests.models.test_paws_pretrainer import _distributed_data
from tests.models.test_paws_pretrainer import _distributed_model

keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
with strategy.scope():
    model = _distributed_model(sync=True)
initial = [w.numpy() for w in model.weights]
history = model.fit(_distributed_data(), verbose=0, shuffle=False).history
emit(
    initial=initial,
    history={k: v[0] for k, v in history.items()},
    weights=[w.numpy() for w in model.encoder.weights + model.head.weights],
)
"""


@pytest.mark.distributed
@pytest.mark.slow
@tf_only
class TestPAWSPretrainerDistributed(TestCase):
    def test_two_replicas_match_one(self):
        # One step on 2 replicas (the support batch split over them like
        # the unlabeled batch, gathered back by the loss) must equal one
        # step here on one device from the same initial weights: both
        # classify against the same global support of 6 images x 2 views.
        double = run_in_subprocess(_TWO_REPLICAS, env={"PYTHONPATH": "."})
        model = _distributed_model(sync=True)
        model.set_weights([np.asarray(w) for w in double["initial"]])
        history = model.fit(
            _distributed_data(), verbose=0, shuffle=False
        ).history
        # float32 round-off, amplified by 1 / tau = 10 and the sharpening
        # power 4, reaches 1e-5; a replica that saw only its half of the
        # support, or only its own ME-MAX mean, is off by ~1e-1.
        for name in PAWSPretrainer.metric_names:
            self.assertAllClose(
                double["history"][name], history[name][0], atol=5e-5, msg=name
            )
        # LARS scales each update by |w| / |g|, so that round-off becomes
        # the updates' error too: up to ~3e-5 here, against ~1e-1 for a
        # replica that saw half of the support.
        single = model.encoder.weights + model.head.weights
        for a, b in zip(double["weights"], single):
            self.assertAllClose(a, b, atol=1e-4, rtol=1e-4)
