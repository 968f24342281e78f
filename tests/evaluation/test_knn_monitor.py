import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ssl
from keras_ssl.evaluation import KNNClassifier
from keras_ssl.evaluation import KNNMonitor
from keras_ssl.evaluation import embed
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.models import SimCLRv2Pretrainer
from tests.models.conftest import tiny_encoder


def separable_images(n, seed):
    """Class c images are bright in channel c: k-NN separates them."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3).astype("int32")
    images = rng.integers(0, 60, (n, 16, 16, 3))
    images[np.arange(n), :, :, labels] += 190
    return images.astype("uint8"), labels


def pretrainer():
    model = SimCLRv2Pretrainer(
        tiny_encoder(),
        head=ProjectionHead(num_layers=2, output_dim=4),
        views=Views.from_preset("simclr_cifar", size=16, seed=1),
        memory_size=0,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.01))
    return model


def fit(model, monitor, epochs):
    unlabeled, _ = separable_images(8, seed=3)
    return model.fit(
        unlabeled, batch_size=4, epochs=epochs, verbose=0, callbacks=[monitor]
    )


def test_logs_at_every_nth_and_the_last_epoch_the_project_knn():
    x, y = separable_images(10, seed=0)
    x_val, y_val = separable_images(7, seed=1)
    model = pretrainer()
    monitor = KNNMonitor(
        x, y, validation_data=(x_val, y_val), every=2, k=5, batch_size=4
    )
    history = fit(model, monitor, epochs=5).history
    assert sorted(monitor.results) == [1, 3, 4]
    assert history["knn_accuracy"] == [monitor.results[e] for e in (1, 3, 4)]
    assert len(history["loss"]) == 5
    # The last value is `KNNClassifier` on `embed`'s features of the
    # trained model.
    knn = KNNClassifier(k=5, temperature=0.1, num_classes=3)
    knn.fit(embed(model, x, output="embedding"), y)
    expected = knn.evaluate(embed(model, x_val, output="embedding"), y_val)
    assert history["knn_accuracy"][-1] == expected
    assert expected > 0.9


def test_cross_validates_the_labeled_images_without_held_out_ones():
    x, y = separable_images(11, seed=0)
    encoder = tiny_encoder()
    monitor = KNNMonitor(x, y, encoder=encoder, k=3, folds=4, batch_size=4)
    monitor.set_model(pretrainer())
    accuracy = monitor.evaluate()
    features = embed(encoder, x)
    folds = np.array_split(np.random.default_rng(0).permutation(11), 4)
    correct = 0
    for held in folds:
        rest = np.setdiff1d(np.arange(11), held)
        knn = KNNClassifier(k=3, num_classes=3).fit(features[rest], y[rest])
        correct += np.sum(knn.predict(features[held]) == y[held])
    assert accuracy == correct / 11
    assert np.allclose(monitor.encode(x), features, atol=1e-5)


def test_encoder_is_traced_once_for_every_evaluation():
    traces = []

    class Counting(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, images):
            # Runs once per trace inside `predict_on_batch`'s function.
            traces.append(images.shape)
            flat = keras.ops.reshape(images, (keras.ops.shape(images)[0], -1))
            return self.dense(keras.ops.cast(flat, "float32") / 255.0)

    x, y = separable_images(10, seed=0)
    x_val, y_val = separable_images(5, seed=1)
    monitor = KNNMonitor(
        x,
        y,
        validation_data=(x_val, y_val),
        encoder=Counting(),
        k=3,
        batch_size=4,
    )
    model = pretrainer()
    monitor.set_model(model)
    monitor.evaluate()
    # Keras traces `call` a few times on the first call (building the
    # layers, then the predict function); none after that.
    first = len(traces)
    fit(model, monitor, epochs=3)
    assert len(monitor.results) == 3
    # Batches of 4, 4, 2 (padded) and 4, 1 (padded), three times.
    assert len(traces) == first
    assert {tuple(shape) for shape in traces} == {(4, 16, 16, 3)}


def test_non_finite_features_give_nan_not_an_error():
    x, y = separable_images(10, seed=0)

    def diverged(images):
        return np.full((len(images), 4), np.nan, "float32")

    for validation_data in (None, separable_images(5, seed=1)):
        monitor = KNNMonitor(
            x, y, validation_data=validation_data, encoder=diverged, k=3
        )
        assert np.isnan(monitor.evaluate())


def test_writes_the_scalar_to_tensorboard(tmp_path):
    x, y = separable_images(10, seed=0)
    monitor = KNNMonitor(
        x, y, k=3, folds=2, batch_size=4, log_dir=str(tmp_path)
    )
    history = fit(pretrainer(), monitor, epochs=2).history
    values = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "knn_accuracy":
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    assert values == pytest.approx(dict(enumerate(history["knn_accuracy"])))
    assert sorted(values) == [0, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, "every"),
        ({"folds": 1}, "folds"),
        ({"folds": 11}, "folds"),
        ({"y": np.zeros(9, "int32")}, "labels.shape"),
        ({"y": np.zeros(10, "float32")}, "integer class ids"),
        ({"log_dir": "a", "summary_writer": object()}, "not both"),
    ],
)
def test_bad_arguments(kwargs, match):
    x, y = separable_images(10, seed=0)
    kwargs = {"x": x, "y": y, **kwargs}
    with pytest.raises(ValueError, match=match):
        KNNMonitor(**kwargs)
