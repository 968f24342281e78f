import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

import keras_ssl
from keras_ssl.testing import TestCase

# Runs in a fresh interpreter where `import tensorflow` fails, as on a JAX
# machine without TensorFlow (issue 7).
_SNIPPET = """
import sys
sys.modules["tensorflow"] = None  # any `import tensorflow` now fails
import json
import os
import tempfile

import keras
import numpy as np

import keras_ssl.data as data

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
y = np.arange(40) % 4
path = os.path.join(tempfile.mkdtemp(), "d.npz")
np.savez(path, x=x, y=y)
x, y = data.load_npz(path)
subset = data.labeled_subset((x, y), per_class=3)
sampler = data.SupportSampler(
    subset.x, subset.y, classes_per_batch=2, images_per_class=3,
    label_smoothing=0.1, one_hot=True)
stream = data.semi_supervised(
    data.from_arrays(x), subset, unlabeled_batch_size=8,
    labeled_batch_size=4, support=sampler)


class DictModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, batch):
        images = keras.ops.cast(batch["unlabeled"], "float32") / 255
        support = keras.ops.cast(batch["support"], "float32") / 255
        return (self.dense(keras.ops.mean(images, (1, 2))),
                self.dense(keras.ops.mean(support, (1, 2))))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        return sum(keras.ops.mean(p ** 2) for p in y_pred)


model = DictModel()
model.compile("sgd")
history = model.fit(stream, epochs=2, verbose=0)
classifier = keras.Sequential([
    keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
classifier.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
classifier.fit(data.from_arrays(x, y, batch_size=8), epochs=1, verbose=0)
print("@@" + json.dumps({
    "backend": keras.backend.backend(),
    "keys": sorted(stream[0]),
    "loss": history.history["loss"],
    "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
    "tfds_loaded": "tensorflow_datasets" in sys.modules,
}))
"""


class TestWithoutTensorFlow(TestCase):
    @pytest.mark.slow
    def test_numpy_pipeline_and_fit_on_jax_without_tensorflow(self):
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        root = os.path.dirname(os.path.dirname(keras_ssl.__file__))
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_SNIPPET)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=root,
        )
        lines = [
            line for line in result.stdout.splitlines() if line.startswith("@@")
        ]
        assert lines, result.stderr[-4000:]
        report = json.loads(lines[-1][2:])
        assert report["backend"] == "jax"
        assert not report["tensorflow_loaded"] and not report["tfds_loaded"]
        assert report["keys"] == [
            "labeled",
            "labels",
            "support",
            "support_labels",
            "support_targets",
            "unlabeled",
        ]
        assert len(report["loss"]) == 2
        assert all(math.isfinite(loss) for loss in report["loss"])
