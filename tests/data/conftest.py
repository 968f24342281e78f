import numpy as np
import pytest


@pytest.fixture
def tiny():
    """40 random 8x8 RGB uint8 images, 4 classes of 10 (labels shuffled)."""
    rng = np.random.default_rng(1234)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = rng.permutation(np.arange(40) % 4)
    return x, y


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """An ImageNet-like folder: 4 classes x 12 training JPEGs (one PNG)
    of varied sizes and a corrupt file; 4 x 4 validation JPEGs."""
    from streaming_fixtures import write_folder

    root = tmp_path_factory.mktemp("folder")
    names = write_folder(str(root))
    return str(root), names


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A prepared few-image `imagenet2012` and `imagenet2012_subset/1pct`."""
    from streaming_fixtures import prepare_tfds

    return prepare_tfds(str(tmp_path_factory.mktemp("tfds")))
