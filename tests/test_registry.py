"""`import keras_ssl` is enough to load a saved keras_ssl model."""

import importlib
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl import _registry
from keras_ssl.models import FineTuner
from keras_ssl.optimizers import LARS
from tests.models.conftest import tiny_encoder

ROOT = pathlib.Path(keras_ssl.__file__).parent


def test_table_names_every_registered_class():
    registering = []
    for path in sorted(ROOT.rglob("*.py")):
        if "register_keras_serializable" in path.read_text():
            parts = path.relative_to(ROOT.parent).with_suffix("").parts
            registering.append(".".join(parts))
    for module in registering:
        importlib.import_module(module)
    registered = {
        name: obj.__module__
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_ssl>")
    }
    missing = {
        k: v for k, v in registered.items() if k not in _registry.CLASSES
    }
    assert not missing, f"Add to keras_ssl/_registry.py CLASSES: {missing}"
    assert registered == _registry.CLASSES


def test_placeholder_builds_the_class():
    placeholder = _registry.Placeholder(
        "keras_ssl>ProjectionHead", "keras_ssl.layers.projection_head"
    )
    head = placeholder.from_config({"num_layers": 2, "output_dim": 4})
    assert type(head).__name__ == "ProjectionHead"
    assert head.num_layers == 2


LOAD = """
import sys
import numpy as np
{imports}
x = np.load({x!r})
model = keras.saving.load_model({path!r})
assert type(model).__module__ == "keras_ssl.models.fine_tuner", type(model)
np.save({out!r}, keras.ops.convert_to_numpy(model.classify(x)))
dense = keras.saving.load_model({dense!r})
assert type(dense.optimizer).__module__ == "keras_ssl.optimizers.lars"
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import keras_ssl\nassert 'keras' not in sys.modules\nimport keras",
        "import keras\nimport keras_ssl",
    ],
    ids=["keras_ssl_first", "keras_first"],
)
def test_saved_model_loads_in_a_fresh_process(tmp_path, imports):
    model = FineTuner(tiny_encoder(), 4, ft_layer=0)
    model.classifier.kernel.assign(np.ones((8, 4), "float32"))
    path = str(tmp_path / "fine_tuner.keras")
    model.save(path)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    dense.compile(optimizer=LARS(0.1), loss="mse")
    dense.save(tmp_path / "dense.keras")
    x = np.linspace(0, 1, 2 * 16 * 16 * 3, dtype="float32")
    x = x.reshape(2, 16, 16, 3)
    expected = keras.ops.convert_to_numpy(model.classify(x))
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "logits.npy")
    code = LOAD.format(
        imports=imports,
        x=str(tmp_path / "x.npy"),
        path=path,
        out=out,
        dense=str(tmp_path / "dense.keras"),
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT.parent))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)
