import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    # Keras's global state is reset after every test. Its optional full
    # garbage collection is left to Python on JAX: there it took about 2
    # s a test, most of the JAX half's time (docs/testing.md).
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def load_benchmark():
    """Imports a script of `benchmarks/` by name (it is not a package)."""
    import importlib.util
    import pathlib

    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name):
        spec = importlib.util.spec_from_file_location(
            name, folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
