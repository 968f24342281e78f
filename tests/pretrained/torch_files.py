"""Writes `torch.save`-format zip files without PyTorch, for the tests.

The pickle inside names `torch._utils._rebuild_tensor_v2` and
`torch.FloatStorage`; stand-ins for them live in `sys.modules` only while
the pickle is written (through pytest's `monkeypatch`).
"""

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np

STORAGES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
}


class _Storage:
    def __init__(self, key, array):
        self.key = key
        self.array = array


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, collections.OrderedDict())


def _fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only written, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def tensors(tree):
    """Replaces the arrays of a tree with tensors on their own storages.

    An array given as `("transposed", a)` becomes a non-contiguous view
    (`a.T` sharing `a`'s storage), as `tensor.t()` saves.
    """
    storages = []

    def convert(value):
        if isinstance(value, dict):
            return collections.OrderedDict(
                (k, convert(v)) for k, v in value.items()
            )
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, tuple) and value[0] == "transposed":
            base = np.ascontiguousarray(value[1])
            storage = _Storage(str(len(storages)), base.ravel())
            storages.append(storage)
            rows, cols = base.shape
            return _Tensor(storage, 0, (cols, rows), (1, cols))
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            storage = _Storage(str(len(storages)), array.ravel())
            storages.append(storage)
            stride = tuple(s // array.itemsize for s in array.strides)
            return _Tensor(storage, 0, array.shape, stride)
        return value

    return convert(tree), storages


def write(path, tree, monkeypatch, archive="archive"):
    """`torch.save(tree, path)` for a tree of dicts, lists and arrays."""
    torch = _fake_torch(monkeypatch)
    tree, storages = tensors(tree)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = getattr(torch, STORAGES[obj.array.dtype])
                return ("storage", kind, obj.key, "cpu", obj.array.size)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(tree)
    with zipfile.ZipFile(path, "w") as f:
        f.writestr(f"{archive}/data.pkl", buffer.getvalue())
        f.writestr(f"{archive}/byteorder", "little")
        f.writestr(f"{archive}/version", "3\n")
        for storage in storages:
            f.writestr(f"{archive}/data/{storage.key}", storage.array.tobytes())
    return path
