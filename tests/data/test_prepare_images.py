import numpy as np
import pytest

from keras_ssl.data import prepare_images


def test_gray_floats_become_uint8_rgb_at_the_size():
    rng = np.random.default_rng(0)
    gray = rng.random((3, 28, 28))
    out = prepare_images(gray, 32)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # A constant image stays constant through the resize.
    flat = prepare_images(np.full((1, 28, 20, 1), 0.5), 16)
    np.testing.assert_array_equal(flat, np.full((1, 16, 16, 3), 128))


def test_pad_upsamples_by_a_whole_factor_and_centres():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    out = prepare_images(image, 10, method="pad")
    assert out.shape == (1, 10, 10, 3)
    # Factor 2 (8 px), one pixel of zeros on each side.
    np.testing.assert_array_equal(
        out[0, 1:9, 1:9, 0], np.kron(image[0], np.ones((2, 2), np.uint8))
    )
    assert out[0, 0].max() == 0 and out[0, 9].max() == 0


def test_rgba_drops_alpha_and_right_size_is_unchanged():
    rgba = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 4))
    out = prepare_images(rgba.astype(np.uint8), 8)
    np.testing.assert_array_equal(out, rgba[..., :3])


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.zeros((2, 8, 8, 2)), {}, "C = 1"),
        (np.zeros((8, 8)), {}, "shape"),
        (np.full((2, 8, 8), 3.0), {}, r"\[0, 1\]"),
        (np.zeros((2, 8, 8)), {"image_size": 0}, "image_size=0"),
        (np.zeros((2, 8, 8)), {"method": "crop"}, "method='crop'"),
        (np.zeros((2, 40, 40)), {"method": "pad"}, "cannot shrink"),
    ],
)
def test_bad_images_are_refused(images, kwargs, match):
    kwargs = {"image_size": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        prepare_images(images, **kwargs)
