"""Images for TensorBoard: a grid of a pretrainer's views, and PNG files
(the recipes' report chart)."""

import keras
import numpy as np

from keras_ssl._checks import check_positive_int

# Pixels of white between the grid's cells.
_GAP = 2


def view_grid(views, max_images=8):
    """One image of `views`: a row per image, a column per view.

    Args:
        views: list of arrays `(B, h, w, 3)` in [0, 1], the views of the
            same `B` images (multi-crop views may be smaller); each is
            resized to the largest view's side.
        max_images: int. Rows at most.

    Returns:
        A float32 array `(H, W, 3)` in [0, 1], with white gaps.
    """
    check_positive_int("max_images", max_images)
    if not views:
        raise ValueError("`views` must hold at least one view. Received: []")
    views = [np.asarray(v, "float32")[:max_images] for v in views]
    side = max(max(v.shape[1], v.shape[2]) for v in views)
    rows, columns = len(views[0]), len(views)
    cell = side + _GAP
    grid = np.ones((rows * cell - _GAP, columns * cell - _GAP, 3), "float32")
    for column, view in enumerate(views):
        if view.shape[1:3] != (side, side):
            view = keras.ops.convert_to_numpy(
                keras.ops.image.resize(view, (side, side))
            )
        for row in range(rows):
            top, left = row * cell, column * cell
            grid[top : top + side, left : left + side] = view[row]
    return np.clip(grid, 0.0, 1.0)


class ViewsGrid(keras.callbacks.Callback):
    """Writes a grid of the model's augmented views to TensorBoard.

    At the start of training, the model's `views` layer (every keras-ssl
    pretrainer has one) augments `images` as a training step would, and
    the grid (`view_grid`: a row per image, a column per view) goes to
    the image summary `views` at step 0 in `log_dir`, so that users see
    what their augmentations do before the run goes far. The views'
    random state is put back afterwards: training draws what it would
    have drawn without the grid.

    Args:
        images: array `(N, H, W, 3)` of uint8 images or floats in [0, 1],
            e.g. the first batch; the first `max_images` are shown.
        log_dir: str. The TensorBoard folder (the stage's log folder).
        max_images: int. Rows of the grid. Defaults to 8.
    """

    def __init__(self, images, log_dir, max_images=8):
        super().__init__()
        check_positive_int("max_images", max_images)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
            raise ValueError(
                "`images` must be a batch of RGB images (N, H, W, 3), "
                f"N >= 1. Received: images.shape={images.shape}"
            )
        self.images = images[:max_images]
        self.log_dir = log_dir
        self.max_images = max_images

    def on_train_begin(self, logs=None):
        views = getattr(self.model, "views", None)
        if views is None:
            raise ValueError(
                "`ViewsGrid` needs a model with a `views` layer (a keras-ssl "
                f"pretrainer). Received: {type(self.model).__name__}"
            )
        images = self.images
        if images.dtype == np.uint8:
            images = images.astype("float32") / 255.0
        # The grid must not change the run: the views' random state (their
        # seed generators) is put back after the draw.
        state = [(v, keras.ops.convert_to_numpy(v)) for v in views.variables]
        made = views(keras.ops.convert_to_tensor(images), training=True)
        for variable, value in state:
            variable.assign(value)
        made = [
            keras.ops.convert_to_numpy(keras.ops.cast(v, "float32"))
            for v in made
        ]
        write_image(self.log_dir, "views", view_grid(made, self.max_images))


def write_image(log_dir, name, image, step=0):
    """Writes one image `(H, W, 3)` (floats in [0, 1] or uint8) to the
    TensorBoard folder `log_dir` under `name`."""
    # TensorBoard's writer: TensorFlow, imported only when one is written.
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "`image` must be (H, W, C) with 1, 3 or 4 channels. Received: "
            f"image.shape={image.shape}"
        )
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.image(name, image[None], step=step)
    writer.close()


def write_png(log_dir, name, path, step=0):
    """Writes the PNG file `path` to the TensorBoard folder `log_dir`."""
    import tensorflow as tf  # As `write_image`.

    with open(path, "rb") as file:
        image = tf.io.decode_png(file.read(), channels=3).numpy()
    write_image(log_dir, name, image, step)
