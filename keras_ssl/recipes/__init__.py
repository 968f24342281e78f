"""Recipes: `fit()` for each method, with configs and a command line.

Each recipe is imported on first use (`keras_ssl.recipes.simclrv2`), so that
`python -m keras_ssl.recipes.simclrv2` runs it as a fresh module.
"""

import importlib

_RECIPES = ("simclrv2", "paws", "semppl")


def __getattr__(name):
    if name in _RECIPES:
        return importlib.import_module(f"keras_ssl.recipes.{name}")
    raise AttributeError(
        f"module 'keras_ssl.recipes' has no attribute {name!r}"
    )
