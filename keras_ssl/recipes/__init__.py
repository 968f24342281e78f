"""Recipes: `fit()` for each method, with configs and a command line.

Each recipe is a module of this package (`simclrv2`, `paws`, `semppl`),
imported on first use (`keras_ssl.recipes.simclrv2`), so that
`python -m keras_ssl.recipes.simclrv2` runs it as a fresh module. A new
recipe module is found the same way, with no list to extend.
"""

import importlib
import importlib.util


def __getattr__(name):
    module = f"keras_ssl.recipes.{name}"
    if not name.startswith("_") and importlib.util.find_spec(module):
        return importlib.import_module(module)
    raise AttributeError(
        f"module 'keras_ssl.recipes' has no attribute {name!r}"
    )
