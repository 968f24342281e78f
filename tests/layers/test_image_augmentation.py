"""What the random image layers share through `ImageAugmentation`."""

import numpy as np
import pytest
from keras import ops

from keras_ssl.layers import ColorDistortion
from keras_ssl.layers import RandomGaussianBlur
from keras_ssl.layers import RandomResizedCrop
from keras_ssl.layers import RandomSolarize

# Each layer with arguments other than its defaults.
CASES = [
    (
        RandomResizedCrop,
        {
            "size": (8, 12),
            "scale": (0.2, 0.9),
            "ratio": (0.5, 2.0),
            "flip": False,
            "eval_crop_proportion": 0.5,
        },
    ),
    (
        ColorDistortion,
        {
            "strength": 0.5,
            "p_jitter": 1.0,
            "p_grayscale": 0.5,
            "brightness": 0.3,
            "contrast": None,
            "saturation": 0.1,
            "hue": 0.05,
        },
    ),
    (
        RandomGaussianBlur,
        {"p": 1.0, "sigma": (0.5, 1.5), "kernel_fraction": 0.3},
    ),
    (RandomSolarize, {"p": 1.0, "threshold": 0.25}),
]
IDS = [cls.__name__ for cls, _ in CASES]


@pytest.mark.parametrize("cls,args", CASES, ids=IDS)
def test_config_holds_every_argument_and_the_seed(cls, args):
    layer = cls(**args, seed=7, name="augment")
    config = layer.get_config()
    assert config["seed"] == 7
    assert config["name"] == "augment"
    for name, value in args.items():
        expected = tuple(value) if isinstance(value, tuple) else value
        assert config[name] == expected, name
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config


@pytest.mark.parametrize("cls,args", CASES, ids=IDS)
def test_one_image_is_a_batch_of_one(cls, args):
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), "uint8")
    single = cls(**args, seed=3)(image, training=True)
    batch = cls(**args, seed=3)(image[None], training=True)
    assert tuple(single.shape) == tuple(batch.shape[1:])
    assert tuple(single.shape) == cls(**args).compute_output_shape((16, 16, 3))
    np.testing.assert_allclose(
        ops.convert_to_numpy(single), ops.convert_to_numpy(batch[0])
    )


@pytest.mark.parametrize("cls,args", CASES, ids=IDS)
def test_equal_seeds_draw_equal_outputs(cls, args):
    images = np.random.default_rng(1).uniform(size=(4, 16, 16, 3))
    images = images.astype("float32")
    first = cls(**args, seed=5)(images, training=True)
    second = cls(**args, seed=5)(images, training=True)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(first), ops.convert_to_numpy(second)
    )
