import keras
import numpy as np
import pytest

from keras_ssl.layers import ProjectionHead
from keras_ssl.models import momentum
from keras_ssl.models.momentum import clone_layer
from keras_ssl.models.momentum import clone_network
from keras_ssl.testing import TestCase


def make_network():
    """Dense -> BN -> ReLU -> Dense, with BN statistics away from (0, 1)."""
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, name="dense")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    network = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    bn = network.get_layer("bn")
    bn.gamma.assign(rng.uniform(0.5, 1.5, 6))
    bn.beta.assign(rng.normal(size=6))
    bn.moving_mean.assign(rng.normal(size=6))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 6))
    return network


def reference(network, x, batch_statistics):
    """The network in float64 NumPy, BN on batch or moving statistics."""
    dense, bn, out = (network.get_layer(n) for n in ("dense", "bn", "out"))
    w = [
        np.asarray(keras.ops.convert_to_numpy(v), np.float64)
        for v in (
            dense.kernel,
            dense.bias,
            bn.gamma,
            bn.beta,
            bn.moving_mean,
            bn.moving_variance,
            out.kernel,
            out.bias,
        )
    ]
    h = x.astype(np.float64) @ w[0] + w[1]
    if batch_statistics:
        mean, var = h.mean(0), h.var(0)  # biased, as BatchNorm
    else:
        mean, var = w[4], w[5]
    h = (h - mean) / np.sqrt(var + 1e-3) * w[2] + w[3]
    return np.maximum(h, 0.0) @ w[6] + w[7]


class TestCloneNetwork(TestCase):
    def test_default_copy_is_frozen_in_inference_mode(self):
        network = make_network()
        copy = clone_network(network)
        x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
        assert not copy.trainable_weights
        # Keras runs a frozen BatchNorm on moving statistics even when
        # `training=True`.
        self.assertAllClose(
            copy(x, training=True), reference(network, x, False), atol=1e-5
        )

    def test_batch_statistics_copy(self):
        network = make_network()
        copy = clone_network(network, batch_statistics=True)
        assert not copy.trainable_weights
        x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
        moving = [
            keras.ops.convert_to_numpy(v) for v in copy.non_trainable_weights
        ]
        self.assertAllClose(
            copy(x, training=True), reference(network, x, True), atol=1e-5
        )
        self.assertAllClose(
            copy(x, training=False), reference(network, x, False), atol=1e-5
        )
        # The call never writes the copy's moving statistics.
        for before, v in zip(moving, copy.non_trainable_weights):
            self.assertAllClose(v, before)
        # Only the copy changed behaviour, not the original's class.
        assert type(network.get_layer("bn")) is keras.layers.BatchNormalization

    def test_batch_statistics_reach_nested_layers(self):
        head = ProjectionHead(num_layers=2, output_dim=3, hidden_dim=4)
        head.build((None, 5))
        x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
        frozen = clone_layer(head, (None, 5))
        batch = clone_layer(head, (None, 5), batch_statistics=True)
        # Fresh moving statistics (0, 1) differ from the batch's.
        inference = keras.ops.convert_to_numpy(frozen(x, training=True)[-1])
        normalized = keras.ops.convert_to_numpy(batch(x, training=True)[-1])
        assert np.abs(inference - normalized).max() > 1e-3
        self.assertAllClose(
            batch(x, training=False)[-1], frozen(x, training=False)[-1]
        )

    def test_keras_internals_are_checked_for_this_version(self):
        # `all_layers` and the class swap of `_freeze` use Keras internals;
        # a Keras outside the checked versions must be checked again (the
        # nested layers found, below, and the batch-statistics tests) and
        # added to the list.
        version = tuple(int(p) for p in keras.version().split(".")[:2])
        assert version in momentum.CHECKED_KERAS_VERSIONS, version
        head = ProjectionHead(num_layers=2, output_dim=3, hidden_dim=4)
        head.build((None, 5))
        found = momentum.all_layers(head)
        assert found[0] is head
        norms = [
            layer
            for layer in found
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert len(norms) == 2  # the hidden layer's and the output's
        # The class swap: the copy's nested BatchNorm layers normalise by
        # the batch, with the variables and paths of a plain copy.
        plain = clone_layer(head, (None, 5))
        batch = clone_layer(head, (None, 5), batch_statistics=True)
        swapped = [
            layer
            for layer in momentum.all_layers(batch)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert len(swapped) == 2
        assert all(isinstance(b, momentum._BatchStatistics) for b in swapped)
        assert [v.path for v in batch.weights] == [
            v.path for v in plain.weights
        ]

    def test_batch_statistics_copy_rejects_masks(self):
        copy = clone_network(make_network(), batch_statistics=True)
        bn = copy.get_layer("bn")
        x = np.ones((2, 6), "float32")
        with pytest.raises(ValueError, match="masks"):
            bn(x, training=True, mask=np.ones((2,), bool))

    def test_renorm_is_rejected(self):
        inputs = keras.Input((4,))
        outputs = keras.layers.BatchNormalization(renorm=True)(inputs)
        network = keras.Model(inputs, outputs)
        with pytest.raises(ValueError, match="renorm=True"):
            clone_network(network, batch_statistics=True)
