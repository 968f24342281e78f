import keras
import numpy as np
import pytest

from keras_ssl.layers import ProjectionHead
from keras_ssl.testing import TestCase


class TestProjectionHead(TestCase):
    def test_contract(self):
        x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
        outputs = self.run_layer_contract(
            ProjectionHead,
            {"num_layers": 3, "output_dim": 8},
            x,
            expected_output_shape=(4, 16),
        )
        assert len(outputs) == 4
        self.assertAllClose(outputs[0], x)
        self.assertShape(outputs[1], (4, 16))
        self.assertShape(outputs[2], (4, 16))
        self.assertShape(outputs[3], (4, 8))

    def test_structure_matches_simclrv2(self):
        head = ProjectionHead(num_layers=2, output_dim=4, hidden_dim=6)
        head(np.zeros((2, 5), "float32"))
        kernels = [d.kernel.shape for d in head.dense_layers]
        assert kernels == [(5, 6), (6, 4)]
        assert all(not d.use_bias for d in head.dense_layers)
        assert head.norm_layers[0].center
        assert not head.norm_layers[-1].center
        assert head.norm_layers[0].momentum == 0.9
        assert head.norm_layers[0].epsilon == 1e-5

    def test_values_match_numpy(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(5, 4)).astype("float32")
        head = ProjectionHead(num_layers=2, output_dim=3)
        outputs = head(x, training=False)
        k1 = keras.ops.convert_to_numpy(head.dense_layers[0].kernel)
        k2 = keras.ops.convert_to_numpy(head.dense_layers[1].kernel)
        eps = 1e-5
        # Freshly built BN in inference mode: mean 0, variance 1.
        h1 = np.maximum(x @ k1 / np.sqrt(1 + eps), 0)
        z = h1 @ k2 / np.sqrt(1 + eps)
        self.assertAllClose(outputs[1], h1, atol=1e-5)
        self.assertAllClose(outputs[2], z, atol=1e-5)

    def test_training_uses_batch_statistics(self):
        x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
        head = ProjectionHead(num_layers=1, output_dim=3)
        z = keras.ops.convert_to_numpy(head(x, training=True)[-1])
        self.assertAllClose(z.mean(0), np.zeros(3), atol=1e-5)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"num_layers": 0}, "num_layers=0"),
            ({"output_dim": -1}, "output_dim=-1"),
            ({"hidden_dim": 0}, "hidden_dim=0"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ProjectionHead(**kwargs)


PAWS_PATTERN = {"use_bias": True, "batch_norm": [True, True, False]}


class TestLayerPatterns(TestCase):
    def test_contract_with_the_paws_pattern(self):
        x = np.random.default_rng(3).normal(size=(4, 6)).astype("float32")
        self.run_layer_contract(
            ProjectionHead,
            {"num_layers": 3, "output_dim": 5, **PAWS_PATTERN},
            x,
            expected_output_shape=(4, 6),
        )
        head = ProjectionHead(3, output_dim=5, **PAWS_PATTERN)
        head.build((None, 6))
        # 3 kernels, 3 biases, 2 x (gamma, beta); 2 x moving statistics.
        assert len(head.trainable_weights) == 10
        assert len(head.non_trainable_weights) == 4

    def test_paws_pattern_matches_numpy(self):
        # suncet: fc1, bn1, relu1, fc2, bn2, relu2, fc3.
        rng = np.random.default_rng(4)
        x = rng.normal(size=(5, 4)).astype("float32")
        head = ProjectionHead(3, output_dim=3, hidden_dim=6, **PAWS_PATTERN)
        head.build((None, 4))
        for dense in head.dense_layers:
            dense.bias.assign(rng.normal(size=dense.bias.shape))
        assert head.norm_layers[-1] is None
        outputs = head(x, training=False)
        eps = 1e-5
        h = x
        for i, dense in enumerate(head.dense_layers):
            kernel = keras.ops.convert_to_numpy(dense.kernel)
            bias = keras.ops.convert_to_numpy(dense.bias)
            h = h @ kernel + bias
            if i < 2:
                h = np.maximum(h / np.sqrt(1 + eps), 0)
            self.assertAllClose(outputs[i + 1], h, atol=1e-5)

    def test_semppl_pattern(self):
        head = ProjectionHead(
            2,
            output_dim=4,
            hidden_dim=8,
            use_bias=True,
            batch_norm=[True, False],
            kernel_initializer="glorot_uniform",
        )
        head.build((None, 6))
        names = [[layer.name for layer in head.layers_of(i)] for i in (0, 1)]
        assert names == [["dense_0", "bn_0", "relu_0"], ["dense_1"]]
        config = head.get_config()
        assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
        rebuilt = ProjectionHead.from_config(config)
        rebuilt.build((None, 6))
        assert rebuilt.batch_norm == (True, False)
        assert rebuilt.use_bias == (True, True)

    def test_layers_get_their_own_initial_weights(self):
        for initializer in (None, "glorot_uniform"):
            head = ProjectionHead(
                3, output_dim=8, kernel_initializer=initializer
            )
            head.build((None, 8))
            k1, k2, k3 = (
                keras.ops.convert_to_numpy(d.kernel) for d in head.dense_layers
            )
            assert not np.allclose(k1, k2) and not np.allclose(k2, k3)

    def test_config_without_the_pattern_is_simclrs(self):
        # Configs saved before the pattern was data load as SimCLR's head.
        config = ProjectionHead(2, output_dim=4).get_config()
        for key in ("use_bias", "batch_norm", "kernel_initializer"):
            del config[key]
        head = ProjectionHead.from_config(config)
        head.build((None, 5))
        assert all(not d.use_bias for d in head.dense_layers)
        assert all(n is not None for n in head.norm_layers)
        assert not head.norm_layers[-1].center

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"batch_norm": [True]}, "batch_norm="),
            ({"use_bias": "yes"}, "use_bias='yes'"),
        ],
    )
    def test_bad_patterns(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ProjectionHead(num_layers=2, **kwargs)
