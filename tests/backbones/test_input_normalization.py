"""The ResNet's input normalization in the network's own precision."""

import keras
import numpy as np
import pytest

from keras_ssl.backbones import ResNet

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _normalized(dtype, images):
    model = ResNet(
        depth=18,
        stem="cifar",
        input_shape=(8, 8, 3),
        input_mean=MEAN,
        input_std=STD,
        dtype=dtype,
    )
    layer = model.get_layer("input_normalization")
    return keras.ops.convert_to_numpy(layer(images))


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX computes in float64 only with jax_enable_x64",
)
def test_float64_network_normalizes_with_float64_constants():
    # A float64 network used to normalise by the mean and deviation
    # rounded to float32 (Keras makes a Python list float32): 8e-8 off,
    # which left a float64 ResNet-50 1e-5 away from PyTorch's in float64.
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3))
    expected = (images - np.array(MEAN)) / np.array(STD)
    out = _normalized("float64", images)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)


def test_float32_network_normalizes_as_before():
    # Float32 constants are the float32 roundings, as they were.
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 3))
    images = images.astype("float32")
    mean = np.array(MEAN, "float32")
    std = np.sqrt(np.square(np.array(STD, "float64")).astype("float32"))
    out = _normalized("float32", images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (images - mean) / std, rtol=1e-6)
