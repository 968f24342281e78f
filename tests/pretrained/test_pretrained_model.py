"""Imported networks plug into keras_ssl's fine-tuning."""

import keras
import numpy as np
import pytest

from keras_ssl.models import FineTuner
from keras_ssl.pretrained import PretrainedModel
from keras_ssl.pretrained import load_simclr
from tests.pretrained import reference as ref
from tests.pretrained.test_simclr import SimCLRReference
from tests.pretrained.test_simclr import write_tf1


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
