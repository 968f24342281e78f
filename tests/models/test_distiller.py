import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ssl
from keras_ssl.models import Distiller
from keras_ssl.models import FineTuner
from keras_ssl.testing import TestCase
from tests.models.conftest import tiny_encoder


def _teacher(num_classes=3):
    model = FineTuner(tiny_encoder(), num_classes=num_classes, ft_layer=0)
    rng = np.random.default_rng(0)
    model.classifier.kernel.assign(
        rng.normal(size=(8, num_classes)).astype("float32")
    )
    return model


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


class TestDistiller(TestCase):
    @pytest.mark.parametrize("alpha", [1.0, 0.3])
    def test_loss_matches_equations_2_and_3(self, batch, alpha):
        teacher = _teacher()
        student = FineTuner(tiny_encoder(width=4), num_classes=3, ft_layer=0)
        student.classifier.kernel.assign(
            np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
        )
        tau = 0.5
        model = Distiller(teacher, student, temperature=tau, alpha=alpha)
        loss, logs = model.compute_ssl_loss(batch, training=False)
        images = np.concatenate([batch["unlabeled"], batch["labeled"]])
        t = keras.ops.convert_to_numpy(teacher(images)).astype("float64")
        s = keras.ops.convert_to_numpy(student(images)).astype("float64")
        n = len(batch["unlabeled"])
        p_t = np.exp(_log_softmax(t[:n] / tau))
        distill = -(p_t * _log_softmax(s[:n] / tau)).sum(-1).mean()
        self.assertAllClose(logs["distill_loss"], distill, atol=1e-5)
        if alpha == 1.0:
            self.assertAllClose(loss, distill, atol=1e-5)
        else:
            log_p = _log_softmax(s[n:])
            supervised = -log_p[np.arange(4), batch["labels"]].mean()
            expected = (1 - alpha) * supervised + alpha * distill
            self.assertAllClose(loss, expected, atol=1e-5)

    def test_self_distillation_trains_only_the_student(self, batch):
        teacher = _teacher()
        student = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
        model = Distiller(teacher, student)
        teacher_before = [w.numpy() for w in teacher.weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        ds = tf.data.Dataset.from_tensors(batch["unlabeled"]).repeat(5)
        history = model.fit(ds, epochs=3, verbose=0, shuffle=False).history
        assert history["distill_loss"][-1] < history["distill_loss"][0]
        for before, after in zip(teacher_before, teacher.weights):
            self.assertAllClose(after, before)

    def test_big_to_small_distillation(self, batch):
        teacher = _teacher()
        student = FineTuner(tiny_encoder(width=2), num_classes=3, ft_layer=0)
        assert student.count_params() < teacher.count_params()
        model = Distiller(teacher, student, temperature=1.0, alpha=0.5)
        model.compile(optimizer=keras_ssl.optimizers.LARS(1.0))
        history = model.fit(
            tf.data.Dataset.from_tensors(batch).repeat(2),
            epochs=1,
            verbose=0,
            shuffle=False,
        ).history
        assert np.isfinite(history["supervised_loss"][0])
        self.run_model_saving(model, batch["unlabeled"])

    def test_class_count_mismatch(self):
        with pytest.raises(ValueError, match="num_classes"):
            Distiller(
                _teacher(3),
                FineTuner(tiny_encoder(), num_classes=4, ft_layer=0),
            )

    @pytest.mark.parametrize(
        "kwargs, match",
        [({"temperature": 0.0}, "temperature=0.0"), ({"alpha": 2}, "alpha=2")],
    )
    def test_bad_arguments(self, kwargs, match):
        student = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
        with pytest.raises(ValueError, match=match):
            Distiller(_teacher(), student, **kwargs)


def test_distillation_leaves_the_teacher_trainable(batch):
    teacher = _teacher()
    trainable = len(teacher.trainable_variables)
    model = Distiller(teacher, FineTuner(tiny_encoder(), 3, ft_layer=0))
    taught = {id(v) for v in teacher.variables}
    assert not taught & {id(v) for v in model.trainable_variables}
    assert taught <= {id(v) for v in model.non_trainable_variables}
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    data = tf.data.Dataset.from_tensors(batch["unlabeled"])
    model.fit(data, verbose=0, shuffle=False)
    assert teacher.trainable and trainable > 0
    assert len(teacher.trainable_variables) == trainable
