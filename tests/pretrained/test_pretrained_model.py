"""Imported networks plug into the rest of keras_ssl: fine-tuning,
distillation, k-NN and linear evaluation, SavedModel export and the JAX
backend."""

import importlib.util
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.backbones import ResNet
from keras_ssl.evaluation import KNNClassifier
from keras_ssl.evaluation import embed
from keras_ssl.export import export_saved_model
from keras_ssl.models import Distiller
from keras_ssl.models import FineTuner
from keras_ssl.pretrained import PretrainedModel
from keras_ssl.pretrained import load_paws
from keras_ssl.pretrained import load_simclr
from keras_ssl.testing import run_in_subprocess
from tests.pretrained import reference as ref
from tests.pretrained import torch_files
from tests.pretrained.test_paws_checkpoints import PAWSReference
from tests.pretrained.test_simclr_checkpoints import SimCLRReference
from tests.pretrained.test_simclr_checkpoints import write_tf1


def numpy(values):
    return [keras.ops.convert_to_numpy(v).copy() for v in values]


@pytest.fixture
def simclr_model(tmp_path):
    reference = SimCLRReference("tf1")
    features = reference.resnet(ref.images(1, 32), 18, 16, 0.0)
    reference.heads(features, 3, 8, 5, 1)
    return load_simclr(write_tf1(reference.params.values, tmp_path), ft_layer=1)


def test_fine_tuner_from_the_head_middle_layer(simclr_model):
    x = ref.images(8, 32)
    y = np.arange(8) % 3
    tuner = FineTuner(
        simclr_model.encoder,
        num_classes=3,
        head=simclr_model.head,
        ft_layer=1,
        image_size=32,
        seed=0,
    )
    # The task network is the imported encoder and first head layer.
    hidden = simclr_model.head(simclr_model.encoder(x))[1]
    np.testing.assert_allclose(tuner.network(x), hidden, rtol=1e-5, atol=1e-5)
    tuner.compile(optimizer=keras.optimizers.SGD(0.1))
    before = keras.ops.convert_to_numpy(simclr_model.encoder.weights[0])
    history = tuner.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = keras.ops.convert_to_numpy(simclr_model.encoder.weights[0])
    assert not np.allclose(before, after)  # the imported weights train


def test_bad_ft_layer(simclr_model):
    with pytest.raises(ValueError, match="Received: ft_layer=4"):
        PretrainedModel(
            simclr_model.encoder, head=simclr_model.head, ft_layer=4
        )
    with pytest.raises(ValueError, match="needs a `head`"):
        PretrainedModel(simclr_model.encoder, predictor=keras.layers.Dense(2))


def test_distiller_with_an_imported_teacher(simclr_model):
    x = ref.images(8, 32)
    student = FineTuner(
        ResNet(depth=18, width_multiplier=0.125, stem="cifar"),
        num_classes=simclr_model.num_classes,
        image_size=32,
        seed=0,
    )
    distiller = Distiller(simclr_model, student, temperature=0.5)
    np.testing.assert_allclose(
        simclr_model.classify(x, training=False),
        simclr_model(x, training=False)["logits"],
    )
    teacher = numpy(simclr_model.weights)
    before = numpy(student.trainable_weights)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(x, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(history["distill_loss"]).all()
    assert 0.0 <= history["agreement"][-1] <= 1.0
    # The student learns; the imported teacher, statistics included, not.
    after = numpy(student.trainable_weights)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    for a, b in zip(teacher, numpy(simclr_model.weights)):
        np.testing.assert_array_equal(a, b)


def test_a_model_without_classifier_is_no_teacher(simclr_model):
    features_only = PretrainedModel(simclr_model.encoder)
    assert features_only.num_classes is None
    with pytest.raises(ValueError, match="has no classifier"):
        features_only.classify(ref.images(1, 32))


def test_knn_and_linear_evaluation(simclr_model):
    x = ref.images(12, 32)
    y = np.arange(12) % 3
    features = embed(simclr_model, x, batch_size=5, output="features")
    np.testing.assert_allclose(
        features,
        simclr_model(x, training=False)["features"],
        rtol=1e-5,
        atol=1e-5,
    )
    # Every labeled image is its own nearest neighbour.
    knn = KNNClassifier(k=1).fit(features, y)
    assert knn.evaluate(features, y) == 1.0

    # Linear evaluation: a classifier on the frozen imported encoder.
    encoder = simclr_model.encoder
    encoder.trainable = False
    probe = FineTuner(encoder, num_classes=3, ft_layer=0, image_size=32)
    probe.compile(optimizer=keras.optimizers.SGD(0.5))
    frozen = numpy(encoder.weights)
    history = probe.fit(x, y, batch_size=6, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert not np.allclose(
        keras.ops.convert_to_numpy(probe.classifier.kernel), 0
    )
    for a, b in zip(frozen, numpy(encoder.weights)):
        np.testing.assert_array_equal(a, b)


def test_export_serves_the_imported_outputs(simclr_model, tmp_path):
    simclr_model.image_size = 32
    images = (ref.images(3, 32) * 255).round().astype("uint8")
    expected = simclr_model(images.astype("float32") / 255, training=False)
    export_saved_model(simclr_model, str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    outputs = served.signatures["serving_default"](images=tf.constant(images))
    assert set(outputs) == {
        "embedding",
        "projection",
        "logits",
        "probabilities",
    }
    for name, key in (
        ("embedding", "features"),
        ("projection", "projection"),
        ("logits", "logits"),
    ):
        np.testing.assert_allclose(
            outputs[name], expected[key], rtol=1e-5, atol=1e-5, err_msg=name
        )
    np.testing.assert_allclose(
        outputs["probabilities"],
        tf.nn.softmax(expected["logits"]),
        rtol=1e-5,
        atol=1e-6,
    )
    # `image_size` survives a config round trip.
    config = simclr_model.get_config()
    assert PretrainedModel.from_config(config).image_size == 32


_JAX_FORWARD = """
from keras_ssl.pretrained import load_paws, load_simclr

x = np.load({images!r})
outputs = {{}}
for name, model in (
    ("simclr", load_simclr({simclr!r}, ft_layer=1)),
    ("paws", load_paws({paws!r})),
):
    out = model(x, training=False)
    outputs[name] = {{k: keras.ops.convert_to_numpy(v) for k, v in out.items()}}
emit(backend=keras.backend.backend(), outputs=outputs)
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
def test_jax_forward_equals_tensorflow(tmp_path, monkeypatch):
    x = ref.images(2, 32)
    np.save(tmp_path / "images.npy", x)
    simclr = SimCLRReference("tf1")
    simclr.heads(simclr.resnet(x, 18, 16, 0.0), 3, 8, 5, 1)
    (tmp_path / "simclr").mkdir()
    simclr_path = str(write_tf1(simclr.params.values, tmp_path / "simclr"))
    paws = PAWSReference()
    paws.prediction(paws.projection(paws.backbone(x, widen=0.25), 16))
    paws_path = str(
        torch_files.write(
            tmp_path / "paws.pth.tar",
            {"encoder": paws.params.values},
            monkeypatch,
        )
    )
    monkeypatch.undo()
    expected = {
        "simclr": load_simclr(simclr_path, ft_layer=1)(x, training=False),
        "paws": load_paws(paws_path)(x, training=False),
    }
    result = run_in_subprocess(
        _JAX_FORWARD.format(
            images=str(tmp_path / "images.npy"),
            simclr=simclr_path,
            paws=paws_path,
        ),
        num_devices=1,
        backend="jax",
        env={"PYTHONPATH": "."},
    )
    assert result["backend"] == "jax"
    for name, outputs in expected.items():
        assert set(result["outputs"][name]) == set(outputs), name
        for key, value in outputs.items():
            np.testing.assert_allclose(
                result["outputs"][name][key],
                value,
                rtol=1e-4,
                atol=1e-4,
                err_msg=json.dumps([name, key]),
            )
