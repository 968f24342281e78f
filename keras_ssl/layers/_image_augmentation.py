"""`ImageAugmentation`: what the random image layers have in common."""

import keras
from keras import ops


class ImageAugmentation(keras.layers.Layer):
    """The base of the random image layers (crop, colour, blur, solarize).

    It holds the layer's `seed` and the `SeedGenerator` its draws come
    from, takes a batch (B, H, W, C) or one image (H, W, C) (a batch of
    one for `augment`), and keeps the shape. A subclass stores each of its
    arguments under its own name, lists them in `config_args` (the config
    adds `seed`) and implements `augment(images, training)` on a batch.

    Args:
        seed: optional int. Seed of the layer's `SeedGenerator`.
        **kwargs: base `Layer` arguments.
    """

    # The subclass's own constructor arguments, which `get_config` stores.
    config_args = ()

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def augment(self, images, training):
        """The layer's output for a batch of images (B, H, W, C)."""
        raise NotImplementedError

    def call(self, images, training=True):
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        outputs = self.augment(images, training)
        return outputs[0] if unbatched else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        for name in (*self.config_args, "seed"):
            config[name] = getattr(self, name)
        return config
