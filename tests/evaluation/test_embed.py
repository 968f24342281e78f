import keras
import numpy as np
import pytest

from keras_ssl.evaluation import embed
from keras_ssl.evaluation.embed import predict_batches
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

    def test_arrays_of_any_size_trace_the_predict_function_once(self):
        traces = []

        class Counting(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)

            def call(self, images):
                # Runs once per trace of the predict function.
                traces.append(tuple(images.shape))
                return self.dense(keras.layers.Flatten()(images))

        model = Counting()
        rng = np.random.default_rng(0)
        first = rng.uniform(size=(10, 4, 4, 3)).astype("float32")
        expected = embed(model, first, batch_size=4)
        traced = len(traces)
        # The labeled images, then test images of other sizes: `predict`
        # would trace the function again for the short last batch.
        for count in (3, 7, 1, 9):
            images = rng.uniform(size=(count, 4, 4, 3)).astype("float32")
            features = embed(model, images, batch_size=4)
            assert features.shape == (count, 2)
        assert len(traces) == traced
        assert set(traces) == {(4, 4, 4, 3)}
        self.assertAllClose(embed(model, first, batch_size=4), expected)

    def test_predict_batches_of_a_function_and_bad_input(self):
        images = np.arange(5 * 2, dtype="float32").reshape(5, 2)
        seen = []

        def double(batch):
            seen.append(batch.shape)
            return {"x": batch * 2}

        outputs = predict_batches(double, images, batch_size=2)
        self.assertAllClose(outputs["x"], images * 2)
        assert seen == [(2, 2)] * 3
        with pytest.raises(ValueError, match="batch_size=0"):
            predict_batches(double, images, batch_size=0)
        with pytest.raises(ValueError, match=r"images.shape=\(0, 2\)"):
            predict_batches(double, images[:0])
