import keras
import numpy as np
import pytest

from keras_ssl.evaluation import embed
from keras_ssl.testing import TestCase


class TestEmbed(TestCase):
    def _model(self):
        inputs = keras.Input((4, 4, 3))
        x = keras.layers.Flatten()(inputs)
        return keras.Model(
            inputs, {"a": keras.layers.Dense(3)(x), "b": x}
        ), keras.Model(inputs, x)

    def test_batches_and_dict_outputs(self):
        images = np.random.default_rng(0).uniform(size=(10, 4, 4, 3))
        dict_model, plain = self._model()
        flat = images.reshape(10, -1).astype("float32")
        self.assertAllClose(embed(plain, images, batch_size=3), flat)
        self.assertAllClose(
            embed(dict_model, images, batch_size=4, output="b"), flat
        )
        with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
            embed(dict_model, images)
        with pytest.raises(ValueError, match="returns a tensor"):
            embed(plain, images, output="a")
