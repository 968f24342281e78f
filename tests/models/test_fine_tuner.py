import keras
import numpy as np
import pytest

from keras_ssl.layers import ProjectionHead
from keras_ssl.models import FineTuner
from keras_ssl.models import fine_tuning_network
from keras_ssl.testing import TestCase
from tests.models.conftest import tiny_encoder


def _head(encoder):
    head = ProjectionHead(num_layers=3, output_dim=4, hidden_dim=6)
    head.build(tuple(encoder.output.shape))
    return head


class TestFineTuner(TestCase):
    @pytest.mark.parametrize("ft_layer, width", [(0, 8), (1, 6), (2, 6)])
    def test_network_is_encoder_plus_head_layers(self, ft_layer, width):
        encoder = tiny_encoder()
        head = _head(encoder)
        network = fine_tuning_network(encoder, head, ft_layer)
        x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
        features = network(x, training=False)
        self.assertShape(features, (2, width))
        # The kept layers are the pretrained ones, not copies.
        activations = head(encoder(x, training=False), training=False)
        self.assertAllClose(features, activations[ft_layer], atol=1e-6)

    def test_ft_layer_larger_than_head_is_rejected(self):
        encoder = tiny_encoder()
        with pytest.raises(ValueError, match="ft_layer=4"):
            FineTuner(encoder, num_classes=3, head=_head(encoder), ft_layer=4)

    def test_classifier_starts_at_zero_and_trains(self):
        rng = np.random.default_rng(0)
        y = np.arange(12) % 3
        # A learnable task: each class has its own brightness.
        x = y[:, None, None, None] * 100 + rng.integers(0, 30, (12, 16, 16, 3))
        x = x.astype("uint8")
        encoder = tiny_encoder()
        model = FineTuner(encoder, num_classes=3, head=_head(encoder))
        self.assertAllClose(model(x), np.zeros((12, 3)))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        history = model.fit(x, y, epochs=30, batch_size=12, verbose=0)
        losses = history.history["loss"]
        self.assertAllClose(losses[0], np.log(3), atol=1e-5)
        assert losses[-1] < np.log(3) - 0.3
        # The head layer that was kept is fine-tuned too.
        kernel = model.network.get_layer("dense_0")
        assert any(v is kernel.kernel for v in model.trainable_variables)

    def test_training_augments_inference_does_not(self):
        x = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3))
        x = x.astype("uint8")
        model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
        model.classifier.kernel.assign(np.ones((8, 3), "float32"))
        a = model.embed(x)
        self.assertAllClose(model.embed(x), a)
        trained = model.augment(x.astype("float32") / 255.0, training=True)
        assert not np.allclose(
            keras.ops.convert_to_numpy(trained), x / 255.0, atol=1e-3
        )

    def test_saving_round_trip(self):
        encoder = tiny_encoder()
        model = FineTuner(encoder, num_classes=3, head=_head(encoder))
        model.classifier.kernel.assign(np.ones((6, 3), "float32"))
        x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3))
        reloaded = self.run_model_saving(model, x.astype("uint8"))
        assert reloaded.ft_layer == 0
        self.run_config_round_trip(model)

    def test_bad_num_classes(self):
        with pytest.raises(ValueError, match="num_classes=1"):
            FineTuner(tiny_encoder(), num_classes=1)


def _separable(count=24, classes=3, seed=0):
    """Images whose class is their brightness, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % classes
    x = y[:, None, None, None] * 90 + rng.integers(0, 60, (count, 16, 16, 3))
    return x.astype("uint8"), y


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_regression_weights_give_scikit_learns_probabilities(classes):
    from sklearn.linear_model import LogisticRegression

    from keras_ssl.models.fine_tuner import logistic_regression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + 4.0
    labels = np.arange(30) % classes
    # Class 3 (of 4) has no example: its logit must lose everywhere.
    kernel, bias, accuracy = logistic_regression(features, labels, 4, l2=2.0)
    scaled = (features - features.mean(0)) / features.std()
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(scaled, labels)
    logits = features @ kernel + bias
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = shifted / shifted.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        probabilities[:, :classes], reference.predict_proba(scaled), atol=1e-6
    )
    assert np.all(probabilities[:, 3] < 1e-9)
    assert accuracy == reference.score(scaled, labels)


def test_lp_ft_starts_at_the_probe_and_does_not_fall_below_it():
    x, y = _separable()
    x_test, y_test = _separable(seed=1)
    keras.utils.set_random_seed(0)
    encoder = tiny_encoder()
    # Moving statistics as a pretrained network would have them.
    encoder(x.astype("float32") / 255.0, training=True)
    model = FineTuner(
        encoder,
        num_classes=3,
        ft_layer=0,
        crop_scale=(0.5, 1.0),
        frozen_batch_norm=True,
        seed=0,
    )
    train_accuracy = model.fit_linear_head(x, y)
    assert train_accuracy == 1.0

    def accuracy():
        logits = model.predict(x_test, verbose=0)
        return np.mean(np.argmax(logits, -1) == y_test)

    probe = accuracy()
    moving = [
        keras.ops.convert_to_numpy(v) for v in encoder.non_trainable_weights
    ]
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = model.fit(x, y, epochs=5, batch_size=12, verbose=0)
    assert probe >= 0.9
    assert accuracy() >= probe
    # The head started fitted: the first loss is far below log(3).
    assert history.history["loss"][0] < 0.5 * np.log(3)
    # Frozen BatchNorm: its moving statistics did not move.
    for before, variable in zip(moving, encoder.non_trainable_weights):
        np.testing.assert_array_equal(
            before, keras.ops.convert_to_numpy(variable)
        )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="compares with tf.function(jit_compile=True)",
)
def test_fit_step_uses_the_compiled_crop():
    """The loss `train_on_batch` reports is that of the compiled crops."""
    import tensorflow as tf

    x = np.random.default_rng(4).integers(0, 256, (8, 16, 16, 3))
    x = x.astype("uint8")
    y = np.arange(8) % 3
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0, seed=6)
    # A classifier that is not zero, so that the loss depends on the crops.
    kernel = np.random.default_rng(5).normal(size=(8, 3)).astype("float32")
    model.classifier.kernel.assign(kernel)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    images = x.astype("float32") / 255.0

    def loss_of(crops):
        logits = model.classify(crops, training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True
            )
        )

    def twin():
        """A crop layer with the same config and seed, in the same state."""
        return model.augment.__class__.from_config(model.augment.get_config())

    reference = twin()
    compiled = tf.function(
        lambda v: reference(v, training=True), jit_compile=True, autograph=False
    )
    expected = loss_of(compiled(images))
    # XLA draws other numbers than the uncompiled ops: the plain layer's
    # crops give another loss, so equality below tells the two apart.
    plain = loss_of(twin()(images, training=True))
    assert not np.isclose(float(plain), float(expected), atol=1e-3)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frozen", [False, True])
def test_lars_leaves_the_classifier_out_of_its_trust_ratio(frozen):
    # SimCLR's fine-tuning: its supervised head takes plain momentum steps
    # of the gradient plus its L2 term, w - lr * (g + wd * w); every other
    # kernel is scaled by its trust ratio. LP-FT's frozen BatchNorm keeps
    # the classifier under the trust ratio too.
    from keras_ssl.optimizers import LARS

    encoder = tiny_encoder()
    model = FineTuner(
        encoder, num_classes=3, head=_head(encoder), frozen_batch_norm=frozen
    )
    lr, wd, eeta = 0.5, 0.1, 0.01
    model.compile(optimizer=LARS(lr, momentum=0.0, weight_decay=wd, eeta=eeta))
    variables = model.trainable_variables
    kernel = model.classifier.kernel
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=kernel.shape).astype("float32")
    kernel.assign(w0)
    grads = [
        rng.normal(size=v.shape).astype("float32") * 0.01 for v in variables
    ]
    g = grads[[i for i, v in enumerate(variables) if v is kernel][0]]
    dense = model.network.get_layer("dense_0").kernel
    d0 = dense.numpy()
    gd = grads[[i for i, v in enumerate(variables) if v is dense][0]]
    model.optimizer.apply(grads, variables)
    decayed = g + wd * w0
    trust = eeta * np.linalg.norm(w0) / np.linalg.norm(decayed)
    expected = w0 - lr * (trust if frozen else 1.0) * decayed
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-5, atol=1e-7)
    decayed = gd + wd * d0
    trust = eeta * np.linalg.norm(d0) / np.linalg.norm(decayed)
    np.testing.assert_allclose(
        dense.numpy(), d0 - lr * trust * decayed, rtol=1e-5, atol=1e-7
    )
