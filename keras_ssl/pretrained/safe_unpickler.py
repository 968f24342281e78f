"""`SafeUnpickler`: reads pickled weights without running code from them.

A pickle names the functions to call while loading it, so `pickle.load`
on a downloaded file runs whatever the file asks for. The published PAWS
(`torch.save`, a zip holding a pickle) and SemPPL (`dill`) checkpoints are
pickles of nothing more than dicts, lists, numbers and arrays; this
unpickler rebuilds exactly those and refuses every other global by name.
It needs neither PyTorch nor dill.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

# PyTorch storage classes -> the dtype of their bytes.
TORCH_STORAGES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for a `torch.*Storage` class: only its dtype matters."""

    def __init__(self, dtype):
        self.dtype = dtype


def _reconstruct_array(subtype, shape, dtype):
    # NumPy pickles arrays as `_reconstruct(ndarray, (0,), b"b")` followed
    # by `__setstate__`; only plain arrays are rebuilt.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(
            f"Refusing to rebuild an array of type {subtype!r}."
        )
    return np.ndarray(shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"Refusing a NumPy scalar of {dtype!r}.")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _from_buffer(buffer, dtype, shape, order):
    # NumPy's pickle protocol 5 form of an array.
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"Refusing an array of {dtype!r}.")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if order == "F" else "C")


def _encode(text, encoding):
    # Protocol-2 pickles written by Python 3 spell bytes this way.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"Refusing `_codecs.encode` with encoding {encoding!r}."
        )
    return text.encode("latin1")


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """`torch._utils._rebuild_tensor_v2` as a NumPy array (a copy)."""
    data = storage
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:],
        shape=tuple(size),
        strides=tuple(s * itemsize for s in stride),
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=None, hooks=None):
    return data


def _safe_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("_codecs", "encode"): _encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct_array
        allowed[(module, "scalar")] = _numpy_scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _from_buffer
    for name, dtype in TORCH_STORAGES.items():
        allowed[("torch", name)] = _StorageType(dtype)
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that rebuilds only containers and arrays.

    Allowed: dicts (also `OrderedDict`), lists, tuples, strings, numbers,
    NumPy arrays and scalars of non-object dtypes, and PyTorch tensors,
    which become NumPy arrays (PyTorch's zip format refers to their bytes
    by key; `storages` maps a key to them). Any other global in the
    pickle raises `pickle.UnpicklingError` naming it, before anything is
    called.

    Args:
        file: binary file object holding the pickle.
        storages: optional callable mapping `(key, dtype)` to a 1-D NumPy
            array, for PyTorch's persistent storage ids. Defaults to
            `None` (a pickle that refers to storages is refused).

    Example:

    ```python
    with open("weights.pkl", "rb") as f:
        tree = keras_ssl.pretrained.SafeUnpickler(f).load()
    ```
    """

    ALLOWED = _safe_globals()

    def __init__(self, file, storages=None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        allowed = self.ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"Refusing to load `{module}.{name}`: the weights reader "
                "accepts only dicts, lists, numbers, strings and arrays."
            )
        return allowed

    def persistent_load(self, pid):
        if (
            self.storages is None
            or not isinstance(pid, tuple)
            or not pid
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
        ):
            raise pickle.UnpicklingError(
                f"Refusing the persistent id {pid!r}: only PyTorch tensor "
                "storages are read."
            )
        return self.storages(str(pid[2]), pid[1].dtype)


def load_pickle(path):
    """Reads a pickle of dicts, lists and arrays with `SafeUnpickler`.

    Args:
        path: str. The pickle file (e.g. a SemPPL `.pkl`).

    Returns:
        The unpickled tree.
    """
    with open(path, "rb") as f:
        return SafeUnpickler(f).load()


def load_torch(path):
    """Reads a `torch.save` zip file as NumPy arrays, without PyTorch.

    Args:
        path: str. A file written by `torch.save` (PyTorch >= 1.6's zip
            format, e.g. PAWS's `.pth.tar`).

    Returns:
        The saved tree with every tensor as a NumPy array.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not in PyTorch's zip format (PyTorch >= 1.6); the "
            "older format can be re-saved with `torch.save(torch.load(f, "
            "weights_only=True), f)`."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path} holds no single `data.pkl`: {names[:5]}")
        root = pickles[0][: -len("data.pkl")]
        big_endian = (
            f"{root}byteorder" in names
            and archive.read(f"{root}byteorder").strip() == b"big"
        )

        def storage(key, dtype):
            raw = archive.read(f"{root}data/{key}")
            if dtype == "bfloat16":
                bits = np.frombuffer(raw, ">u2" if big_endian else "<u2")
                return (bits.astype(np.uint32) << 16).view(np.float32)
            dtype = np.dtype(dtype)
            if big_endian:
                dtype = dtype.newbyteorder(">")
            return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))

        data = io.BytesIO(archive.read(pickles[0]))
        return SafeUnpickler(data, storages=storage).load()
