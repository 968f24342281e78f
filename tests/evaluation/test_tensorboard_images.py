"""TensorBoard images, checked by reading the event files back."""

import glob

import numpy as np
import pytest

from keras_ssl.evaluation.tensorboard_images import ViewsGrid
from keras_ssl.evaluation.tensorboard_images import view_grid
from keras_ssl.evaluation.tensorboard_images import write_png
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.models import SimCLRv2Pretrainer
from tests.models.conftest import tiny_encoder

tf = pytest.importorskip("tensorflow")


def read_summaries(log_dir):
    """`{tag: [(step, value)]}` from the event files under `log_dir`: an
    image (H, W, C) uint8 for an image summary, a float for a scalar."""
    found = {}
    pattern = f"{log_dir}/**/events.out.tfevents.*"
    for path in glob.glob(pattern, recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin not in ("images", "scalars"):
                    continue
                tensor = tf.make_ndarray(value.tensor)
                if plugin == "images":
                    # [width, height, png, ...] as strings.
                    tensor = tf.io.decode_png(tensor[2]).numpy()
                else:
                    tensor = float(tensor)
                found.setdefault(value.tag, []).append((event.step, tensor))
    return found


def read_images(log_dir):
    """The image summaries of `read_summaries`."""
    return {
        tag: values
        for tag, values in read_summaries(log_dir).items()
        if np.ndim(values[0][1]) == 3
    }


def test_grid_is_a_row_per_image_and_a_column_per_view():
    a = np.full((3, 4, 4, 3), 0.25, "float32")
    b = np.full((3, 2, 2, 3), 0.75, "float32")
    grid = view_grid([a, b], max_images=2)
    # 2 rows and 2 columns of 4 px cells, 2 px gaps.
    assert grid.shape == (10, 10, 3)
    np.testing.assert_allclose(grid[:4, :4], 0.25)
    np.testing.assert_allclose(grid[6:, 6:], 0.75)  # resized up, constant
    np.testing.assert_allclose(grid[4:6], 1.0)  # the gap
    with pytest.raises(ValueError, match="max_images"):
        view_grid([a], max_images=0)


def test_views_grid_writes_the_models_views(tmp_path):
    views = Views([ViewSpec(16), ViewSpec(16)], seed=1)
    model = SimCLRv2Pretrainer(tiny_encoder(), views=views, memory_size=0)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3))
    images = images.astype("uint8")
    log_dir = str(tmp_path / "logs")
    # What `fit()` does with a callback before the first step.
    callback = ViewsGrid(images, log_dir, max_images=3)
    callback.set_model(model)
    callback.on_train_begin()
    ((step, grid),) = read_images(log_dir)["views"]
    assert step == 0
    assert grid.shape == (3 * 18 - 2, 2 * 18 - 2, 3)
    # Augmented, not the images themselves.
    assert not np.array_equal(grid[:16, :16], images[0])


def test_views_grid_leaves_the_training_draws_as_they_were(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3))
    x = images.astype("float32") / 255.0

    def first_draw(with_grid):
        views = Views([ViewSpec(16), ViewSpec(16)], seed=1)
        model = SimCLRv2Pretrainer(tiny_encoder(), views=views, memory_size=0)
        if with_grid:
            callback = ViewsGrid(images.astype("uint8"), str(tmp_path))
            callback.set_model(model)
            callback.on_train_begin()
        return [np.asarray(v) for v in views(x, training=True)]

    for a, b in zip(first_draw(True), first_draw(False)):
        np.testing.assert_array_equal(a, b)


def test_views_grid_refuses_what_is_not_a_batch(tmp_path):
    with pytest.raises(ValueError, match="images.shape"):
        ViewsGrid(np.zeros((16, 16, 3)), str(tmp_path))


def test_png_round_trips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), "uint8")
    path = str(tmp_path / "report.png")
    with open(path, "wb") as file:
        file.write(tf.io.encode_png(pixels).numpy())
    write_png(str(tmp_path / "logs"), "report", path)
    ((step, image),) = read_images(str(tmp_path / "logs"))["report"]
    np.testing.assert_array_equal(image, pixels)
