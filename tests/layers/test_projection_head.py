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
