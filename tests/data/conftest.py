import numpy as np
import pytest


@pytest.fixture
def tiny():
    """40 random 8x8 RGB uint8 images, 4 classes of 10 (labels shuffled)."""
    rng = np.random.default_rng(1234)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = rng.permutation(np.arange(40) % 4)
    return x, y
