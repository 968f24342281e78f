"""Random solarization: invert the bright pixels of some images."""

import keras
from keras import ops

from keras_ssl._checks import check_probability
from keras_ssl.layers._image_augmentation import ImageAugmentation
from keras_ssl.layers.random_resized_crop import to_float_images


def solarize(images, threshold=0.5):
    """`x -> 1 - x` where `x >= threshold`, elementwise.

    Args:
        images: float tensor in [0, 1].
        threshold: float. Values at or above it are inverted.

    Returns:
        A tensor like `images`.
    """
    return ops.where(images >= threshold, 1.0 - images, images)


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomSolarize(ImageAugmentation):
    """Solarizes each image with probability `p`.

    Pixel values at or above `threshold` become `1 - x` (BYOL's and PIL's
    solarize); used on the second view of BYOL, RELICv2 and SemPPL.

    Args:
        p: float in [0, 1]. Probability of solarizing an image. Defaults to
            `0.2` (SemPPL's odd views).
        threshold: float in [0, 1]. Defaults to `0.5`.
        seed: optional int. Seed of the layer's `SeedGenerator`.
        **kwargs: base `Layer` arguments.

    Input: uint8 or float images (B, H, W, C) or one image (H, W, C); float
    images are expected in [0, 1]. Output: float32, same shape.
    `training=False` only converts to float32 in [0, 1].

    Example:

    ```python
    solarize = keras_ssl.layers.RandomSolarize(p=0.2, seed=0)
    images = np.random.uniform(size=(8, 32, 32, 3)).astype("float32")
    outputs = solarize(images, training=True)
    ```

    References:
        - [Grill et al., 2020](https://arxiv.org/abs/2006.07733), BYOL,
          Appendix B.
        - [Bošnjak et al., 2023](https://arxiv.org/abs/2301.05158), SemPPL,
          Appendix E, Table 12: solarization probability 0% (even views)
          and 20% (odd views), threshold 0.5.
    """

    config_args = ("p", "threshold")

    def __init__(self, p=0.2, threshold=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        check_probability("p", p)
        check_probability("threshold", threshold)
        self.p = float(p)
        self.threshold = float(threshold)

    def sample_params(self, batch_size):
        """Draws whether each image is solarized: bool (B,)."""
        u = keras.random.uniform((batch_size,), seed=self.seed_generator)
        return u < self.p

    def augment(self, images, training):
        outputs = to_float_images(images)
        if training and self.p > 0.0:
            apply = self.sample_params(ops.shape(outputs)[0])
            solarized = solarize(outputs, self.threshold)
            outputs = ops.where(apply[:, None, None, None], solarized, outputs)
        return outputs
