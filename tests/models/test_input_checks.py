"""The models' own `fit()` refuses images it would train on silently."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.models import FineTuner
from keras_ssl.models import SimCLRv2Pretrainer
from keras_ssl.models._input_checks import check_fit_input
from tests.models.conftest import tiny_encoder
from tests.models.model_cases import make_images
from tests.models.model_cases import make_model
from tests.models.model_cases import make_stream

LABELS = np.arange(8, dtype="int32") % 4


def _fine_tuner():
    model = FineTuner(tiny_encoder(), 4, ft_layer=0)
    model.compile(optimizer="sgd")
    return model


def _pretrainer():
    model = SimCLRv2Pretrainer(
        tiny_encoder(),
        head=ProjectionHead(num_layers=2, output_dim=4, hidden_dim=8),
        views=Views([ViewSpec(16), ViewSpec(16)], seed=1),
        memory_size=0,
    )
    model.compile(optimizer="sgd")
    return model


def _fit(model, x, **kwargs):
    if isinstance(model, FineTuner) and isinstance(x, np.ndarray):
        kwargs.setdefault("y", LABELS[: len(x)])
    return model.fit(x, epochs=1, verbose=0, **kwargs)


def _float_images(scale=1.0, n=8):
    return make_images(n).astype("float32") * scale


MODELS = {"fine_tuner": _fine_tuner, "simclrv2": _pretrainer}


@pytest.mark.parametrize("name", MODELS)
class TestArrays:
    def test_float_images_in_0_255(self, name):
        model = MODELS[name]()
        with pytest.raises(ValueError, match="float images in") as info:
            _fit(model, _float_images())
        message = str(info.value)
        assert "x with dtype=float32" in message
        assert "max=255.0" in message
        assert "divide them by 255 or cast them to uint8" in message
        assert int(model.optimizer.iterations) == 0
        # The same images in [0, 1] train.
        history = _fit(model, _float_images(1 / 255), batch_size=4)
        assert np.isfinite(history.history["loss"][-1])
        assert int(model.optimizer.iterations) == 2

    def test_float_images_in_minus_one_to_one(self, name):
        x = _float_images(2 / 255) - 1
        with pytest.raises(ValueError, match=r"min=-1.0, .*Rescale them to"):
            _fit(MODELS[name](), x)

    def test_all_nan_images(self, name):
        x = np.full((8, 16, 16, 3), np.nan, "float32")
        with pytest.raises(ValueError, match="in x, every value is NaN"):
            _fit(MODELS[name](), x)

    def test_some_infinite_values(self, name):
        x = _float_images(1 / 255)
        x[0, 0, 0, 0] = np.inf
        with pytest.raises(ValueError, match="1 of 6144 values are NaN or"):
            _fit(MODELS[name](), x)

    def test_empty_array(self, name):
        x = np.zeros((0, 16, 16, 3), "uint8")
        with pytest.raises(ValueError, match=r"x.shape=\(0, 16, 16, 3\)"):
            _fit(MODELS[name](), x)

    def test_one_channel(self, name):
        x = make_images(8)[..., :1]
        with pytest.raises(ValueError) as info:
            _fit(MODELS[name](), x)
        message = str(info.value)
        assert "Received: x with 1 channel (x.shape=(8, 16, 16, 1))" in (
            message
        )
        assert "keras.ops.repeat(x, 3, axis=-1)" in message

    def test_no_channel_axis(self, name):
        x = make_images(8)[..., 0]
        with pytest.raises(ValueError, match=r"x.shape=\(8, 16, 16\)"):
            _fit(MODELS[name](), x)


class TestStreams:
    def test_tf_dataset_of_floats_in_0_255(self):
        ds = tf.data.Dataset.from_tensor_slices(_float_images()).batch(4)
        with pytest.raises(ValueError, match=r"x \(its first batch\)"):
            _fit(_pretrainer(), ds)

    def test_tf_dataset_of_one_channel_images(self):
        ds = tf.data.Dataset.from_tensor_slices(make_images(8)[..., :1])
        with pytest.raises(ValueError, match="with 1 channel "):
            _fit(_pretrainer(), ds.batch(4))

    def test_empty_tf_dataset(self):
        ds = tf.data.Dataset.from_tensor_slices(make_images(8)).take(0)
        with pytest.raises(ValueError, match="has no batches"):
            _fit(_pretrainer(), ds.batch(4))

    def test_uint8_tf_dataset_is_checked_without_reading_it(self):
        reads = []

        def generator():
            reads.append(1)
            yield make_images(4)

        ds = tf.data.Dataset.from_generator(
            generator,
            output_signature=tf.TensorSpec((None, 16, 16, 3), tf.uint8),
        )
        assert check_fit_input(ds) is ds
        assert reads == []

    def test_generator_with_nan_in_its_first_batch(self):
        def generator():
            yield {"unlabeled": np.full((4, 16, 16, 3), np.nan, "float32")}

        with pytest.raises(ValueError, match=r"x\['unlabeled'\] \(its first"):
            _fit(_pretrainer(), generator(), steps_per_epoch=1)

    def test_generator_keeps_its_first_batch(self):
        batches = [make_images(4, seed) for seed in range(3)]
        checked = check_fit_input(_gen(batches))
        assert [b.tolist() for b in checked] == [b.tolist() for b in batches]

    def test_py_dataset_with_one_channel_support(self):
        stream = make_stream("paws")
        model = make_model("paws")
        model.compile(optimizer="sgd")

        class OneChannel(keras.utils.PyDataset):
            def __len__(self):
                return 1

            def __getitem__(self, index):
                batch = dict(stream[index])
                batch["support"] = batch["support"][..., :1]
                return batch

        with pytest.raises(ValueError, match=r"x\['support'\] with 1 channel "):
            _fit(model, OneChannel())

    def test_distiller_checks_its_images(self):
        model = make_model("distiller")
        model.compile(optimizer="sgd")
        with pytest.raises(ValueError, match="max=255.0"):
            _fit(model, _float_images())


def _gen(batches):
    yield from batches
