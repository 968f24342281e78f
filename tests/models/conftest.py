import keras
import numpy as np
import pytest


def tiny_encoder(size=16, width=8, synchronized=False, name=None):
    """A small functional CNN: any 4-D image model works as an encoder."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization(synchronized=synchronized)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name=name)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return {
        "unlabeled": rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8"),
        "labeled": rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
        "labels": np.array([0, 1, 2, 1], "int32"),
    }
