import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


def _resident_bytes():
    """This process's resident memory (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


# Resident memory after the last full garbage collection.
_COLLECTED_AT = [0]
# Growth that triggers the next one.
_COLLECT_AFTER = 512 * 2**20


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    # Keras's global state is reset after every test. A full garbage
    # collection (Keras models hold reference cycles) runs only once the
    # process has grown by 512 MiB since the last one: after every test
    # it took most of the JAX half's time and a third of a small test's
    # on TensorFlow, and never collecting let a test process grow past
    # 10 GB (docs/testing.md).
    resident = _resident_bytes()
    collect = resident is None or resident > _COLLECTED_AT[0] + _COLLECT_AFTER
    keras.backend.clear_session(free_memory=collect)
    if collect:
        _COLLECTED_AT[0] = _resident_bytes() or 0


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


@pytest.fixture
def python_without_site_packages(tmp_path):
    """An interpreter that sees only the standard library and PYTHONPATH
    (a reference environment without its packages)."""
    import stat
    import sys

    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return str(python)
