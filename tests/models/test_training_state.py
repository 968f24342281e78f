"""Each model's first `fit` traces its training step once, and trains
exactly as when Keras made the optimizer's (and metrics') variables
inside the step (`keras_ssl/models/_training_state.py`)."""

import keras
import numpy as np
import pytest

from keras_ssl import data as ssl_data
from keras_ssl.models import FineTuner
from keras_ssl.models import _training_state
from keras_ssl.optimizers import LARS
from tests.models.conftest import tiny_encoder
from tests.models.model_cases import MODELS
from tests.models.model_cases import make_model
from tests.models.model_cases import make_stream

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.function's second trace after creating variables",
)


def _counting(model):
    """Counts the traces of `model`'s training step."""
    traces = []
    step = model.train_step

    def counted(*args):
        traces.append(1)
        return step(*args)

    model.train_step = counted
    return traces


def _values(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _labeled(n=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 16, 16, 3)).astype("uint8")
    return x, np.arange(n) % classes


def _fine_tuner(**compile_kwargs):
    keras.utils.set_random_seed(0)
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0, seed=0)
    model.compile(optimizer=LARS(0.1, weight_decay=1e-4), **compile_kwargs)
    return model


def _inputs(kind):
    x, y = _labeled()
    if kind == "arrays":
        return (x, y), {"batch_size": 6}
    if kind == "stream":
        stream = ssl_data.from_arrays(x, y, batch_size=6, seed=0, repeat=True)
        return (stream,), {"steps_per_epoch": 2, "shuffle": False}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    return (dataset,), {"shuffle": False}


def _trained(model, args, kwargs):
    traces = _counting(model)
    history = model.fit(*args, epochs=1, verbose=0, **kwargs).history
    return traces, history, _values(model)


@pytest.mark.parametrize("kind", ["arrays", "stream", "tf_data"])
def test_fine_tuner_traces_once_and_trains_as_before(kind):
    args, kwargs = _inputs(kind)
    traces, history, weights = _trained(_fine_tuner(), args, kwargs)
    assert len(traces) == 1
    # The same model with Keras making the variables in the first trace
    # (the old way: traced twice) ends with the same weights and logs.
    model = _fine_tuner()
    model.fit = lambda *a, **k: keras.Model.fit(model, *a, **k)
    old_traces, old_history, old_weights = _trained(model, args, kwargs)
    assert len(old_traces) == 2
    assert history == old_history
    for new, old in zip(weights, old_weights):
        np.testing.assert_array_equal(new, old)


def test_one_hot_labels_keep_their_accuracy():
    """The metrics are built from the labels' real shape: one-hot labels
    get categorical accuracy, as Keras would choose in the step."""
    x, y = _labeled()
    one_hot = np.eye(3, dtype="float32")[y]
    model = _fine_tuner(
        loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, one_hot, batch_size=12, epochs=1, verbose=0)
    logits = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    # After the step; with a rate this small the predictions do not move.
    accuracy = np.mean(np.argmax(logits, -1) == y)
    assert history.history["accuracy"][0] == pytest.approx(accuracy, abs=0.1)


def test_a_generator_leaves_the_state_to_the_first_step():
    x, y = _labeled()

    def batches():
        while True:
            yield x[:6], y[:6]

    model = _fine_tuner()
    assert _training_state.batch_spec(batches()) is None
    traces = _counting(model)
    model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert len(traces) == 2


@pytest.mark.parametrize("name", MODELS)
def test_each_pretrainer_traces_its_step_once(name):
    keras.utils.set_random_seed(0)
    model = make_model(name)
    model.compile(optimizer=LARS(0.5, weight_decay=1e-4))
    traces = _counting(model)
    # Batches of static size (SemPPL needs them on TensorFlow).
    data = make_stream(name).to_tf_dataset()
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    assert len(traces) == 1


def test_an_unbuilt_layer_leaves_the_optimizer_to_the_first_step():
    class Lazy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Lazy()
    model.compile(optimizer="sgd", loss="mse")
    _training_state.build_training_state(model)
    assert not model.optimizer.built
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    assert model.optimizer.built


class TestKerasPrivateAPI:
    """The two private Keras methods `_training_state` relies on (checked
    against Keras 3.15.1): this fails if Keras renames them or changes
    what they do."""

    def test_symbolic_build_builds_metrics_and_optimizer(self):
        model = _fine_tuner()
        assert not model.optimizer.built
        model._symbolic_build(
            data_batch=(
                keras.KerasTensor((None, 16, 16, 3), "uint8"),
                keras.KerasTensor((None,), "int64"),
                None,
            )
        )
        assert model.optimizer.built
        assert model._compile_metrics.built and model._compile_loss.built

    def test_flatten_layers_walks_nested_layers(self):
        model = _fine_tuner()
        layers = list(model._flatten_layers())
        assert model.classifier in layers and model.augment in layers
        assert any(isinstance(layer, keras.layers.Conv2D) for layer in layers)
