"""keras-ssl: semi-supervised visual representation learning for Keras 3.

SimCLRv2, PAWS and SemPPL as Keras models with custom training steps, LARS,
synchronized BatchNorm and recipes that run from one CPU to TPU pods.

The subpackages load on first use (`keras_ssl.models`, ...), so that a
recipe's command line answers before Keras and its backend are imported.
Saved models load all the same: `import keras_ssl` is enough for
`keras.saving.load_model` to find keras_ssl's classes (see `_registry`).
"""

import importlib

from keras_ssl import _registry

_SUBPACKAGES = (
    "backbones",
    "data",
    "distribute",
    "evaluation",
    "inference",
    "layers",
    "losses",
    "models",
    "ops",
    "optimizers",
    "recipes",
)

__version__ = "0.1.0"

_registry.install()


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_ssl.{name}")
    raise AttributeError(f"module 'keras_ssl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
