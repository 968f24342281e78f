import keras
import numpy as np
import pytest

from keras_ssl.losses import Distillation
from keras_ssl.losses import distillation
from keras_ssl.testing import TestCase


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference(teacher, student, tau, labels=None, labeled=None, alpha=1.0):
    """SimCLRv2 eqs. (2)-(3), written out in float64."""
    p_t = np.exp(_log_softmax(teacher / tau))
    distill = -(p_t * _log_softmax(student / tau)).sum(-1)
    if labels is None or alpha == 1.0:
        return distill.mean(), distill
    supervised = -_log_softmax(labeled)[np.arange(len(labels)), labels]
    return (1 - alpha) * supervised.mean() + alpha * distill.mean(), distill


class TestDistillation(TestCase):
    def setup_method(self):
        rng = np.random.default_rng(0)
        self.teacher = rng.normal(size=(6, 4))
        self.student = rng.normal(size=(6, 4))
        self.labeled = rng.normal(size=(3, 4))
        self.labels = np.array([0, 3, 1])

    @pytest.mark.parametrize("tau", [0.1, 1.0])
    def test_equation_2(self, tau):
        loss, metrics = distillation(
            self.teacher, self.student, tau, return_metrics=True
        )
        expected, _ = reference(self.teacher, self.student, tau)
        self.assertAllClose(loss, expected, atol=1e-5)
        self.assertAllClose(metrics["distill_loss"], expected, atol=1e-5)
        assert "supervised_loss" not in metrics

    @pytest.mark.parametrize("alpha", [0.0, 0.3])
    def test_equation_3(self, alpha):
        loss, metrics = distillation(
            self.teacher,
            self.student,
            0.5,
            labels=self.labels,
            labeled_logits=self.labeled,
            alpha=alpha,
            return_metrics=True,
        )
        expected, _ = reference(
            self.teacher, self.student, 0.5, self.labels, self.labeled, alpha
        )
        self.assertAllClose(loss, expected, atol=1e-5)
        supervised = -_log_softmax(self.labeled)[np.arange(3), self.labels]
        self.assertAllClose(
            metrics["supervised_loss"], supervised.mean(), atol=1e-5
        )

    def test_labels_are_ignored_at_alpha_one(self):
        loss = distillation(
            self.teacher,
            self.student,
            labels=self.labels,
            labeled_logits=self.labeled,
        )
        self.assertAllClose(
            loss, reference(self.teacher, self.student, 1.0)[0], atol=1e-5
        )

    def test_class_gives_per_example_losses(self):
        loss_fn = Distillation(temperature=0.5, reduction=None)
        _, expected = reference(self.teacher, self.student, 0.5)
        self.assertAllClose(
            loss_fn(self.teacher, self.student), expected, atol=1e-5
        )
        mean = Distillation(temperature=0.5)(self.teacher, self.student)
        self.assertAllClose(mean, expected.mean(), atol=1e-5)

    def test_config_round_trip(self):
        loss_fn = Distillation(temperature=0.1, name="kd")
        rebuilt = Distillation.from_config(loss_fn.get_config())
        assert rebuilt.temperature == 0.1 and rebuilt.name == "kd"
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss_fn)
        )
        assert isinstance(restored, Distillation)

    @pytest.mark.skipif(
        keras.backend.backend() != "tensorflow", reason="uses a GradientTape"
    )
    def test_no_gradient_into_the_teacher(self):
        import tensorflow as tf

        teacher = tf.Variable(self.teacher, dtype="float32")
        student = tf.Variable(self.student, dtype="float32")
        with tf.GradientTape() as tape:
            loss = distillation(teacher, student, 0.5)
        grad_teacher, grad_student = tape.gradient(loss, [teacher, student])
        assert grad_teacher is None
        assert np.abs(grad_student.numpy()).sum() > 0

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"temperature": 0.0}, "temperature=0.0"),
            ({"alpha": 1.5}, "alpha=1.5"),
            ({"labels": np.array([0, 1, 2]), "alpha": 0.5}, "labeled_logits"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            distillation(self.teacher, self.student, **kwargs)
        if "temperature" in kwargs:
            with pytest.raises(ValueError, match=match):
                Distillation(**kwargs)
