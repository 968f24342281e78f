"""`SafeUnpickler`: reads pickled weights without running code from them.

A pickle names the functions to call while loading it, so `pickle.load`
on a downloaded file runs whatever the file asks for. The published PAWS
(`torch.save`, a zip holding a pickle) and SemPPL (`dill`) checkpoints are
pickles of nothing more than dicts, lists, tuples, named tuples, numbers
and arrays; this unpickler rebuilds exactly those and refuses every other
global by name. Each global it accepts maps to a function of this module
that rebuilds a NumPy array, a dtype or a record, never to the library
the file names: it needs neither PyTorch, nor dill, nor JAX.
"""

import collections
import io
import operator
import os
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


# NumPy's scalar types, by name: the only classes a dtype class or a
# `numpy.dtype(...)` call may name.
NUMPY_SCALARS = (
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


def _reconstruct_array(subtype, shape, dtype):
    # NumPy pickles arrays as `_reconstruct(ndarray, (0,), b"b")` followed
    # by `__setstate__`; only plain arrays are rebuilt.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(
            f"Refusing to rebuild an array of type {subtype!r}."
        )
    return np.ndarray(shape, dtype)


def _array_from_reduce(function, args, state, source):
    """An array from `ndarray.__reduce__`'s `(function, args, state)`.

    `function` must be NumPy's `_reconstruct` as this unpickler maps it,
    so nothing but `np.ndarray(shape, dtype)` and `__setstate__` runs.
    """
    if function is not _reconstruct_array or not isinstance(args, tuple):
        raise pickle.UnpicklingError(
            f"Refusing `{source}` with the reconstructor {function!r}: only "
            "NumPy's `_reconstruct` is accepted."
        )
    array = _reconstruct_array(*args)
    array.__setstate__(state)
    return array


def _dill_array(function, args, state, npdict=None):
    """`dill._dill._create_array`: dill's form of every NumPy array."""
    if npdict:
        raise pickle.UnpicklingError(
            "Refusing `dill._dill._create_array` with instance attributes "
            f"{sorted(npdict)!r}: only plain arrays are read."
        )
    return _array_from_reduce(function, args, state, "dill._dill._create_array")


def _jax_array(function, args, state, aval_state=None):
    """`jax._src.array._reconstruct_array` (and JAX < 0.4's
    `device_array.reconstruct_device_array`) as a NumPy array."""
    if aval_state is not None and not isinstance(aval_state, dict):
        raise pickle.UnpicklingError(
            f"Refusing a JAX array with the abstract value {aval_state!r}."
        )
    return _array_from_reduce(function, args, state, "JAX's array")


def _dill_dtype_class(scalar_type):
    """`dill._dill._create_dtypemeta`: the class of a NumPy dtype."""
    if scalar_type is None:
        return np.dtype
    if scalar_type not in {getattr(np, n) for n in NUMPY_SCALARS}:
        raise pickle.UnpicklingError(
            f"Refusing the dtype class of {scalar_type!r}."
        )
    return type(np.dtype(scalar_type))


class Record(tuple):
    """A named tuple read from a pickle (`dill` pickles each one's class).

    Fields are read as attributes, as on the original class, or with
    `_asdict()`; nothing of the original class is run or imported.
    """

    _fields = ()

    def __new__(cls, *values):
        if len(values) != len(cls._fields):
            raise pickle.UnpicklingError(
                f"{cls.__name__} has fields {cls._fields}; got "
                f"{len(values)} values."
            )
        return super().__new__(cls, values)

    def _asdict(self):
        return dict(zip(self._fields, self))

    def __repr__(self):
        items = ", ".join(f"{k}=..." for k in self._fields)
        return f"{type(self).__name__}({items})"


def _dill_namedtuple(name, fieldnames, modulename, defaults=None):
    """`dill._dill._create_namedtuple`: a `Record` class with those fields
    (the module named is neither imported nor searched)."""
    fields = fieldnames if isinstance(fieldnames, (tuple, list)) else [None]
    # As `collections.namedtuple`: identifiers, no field starting with "_"
    # (so that no field shadows a special method).
    if (
        not all(
            isinstance(n, str) and n.isidentifier() for n in (name, *fields)
        )
        or any(n.startswith("_") for n in fields)
        or not isinstance(modulename, str)
    ):
        raise pickle.UnpicklingError(
            f"Refusing the named tuple {name!r} of {modulename!r} with "
            f"fields {fieldnames!r}."
        )
    namespace = {"_fields": tuple(fields), "__module__": modulename}
    for i, field in enumerate(fields):
        namespace[field] = property(operator.itemgetter(i))
    return type(name, (Record,), namespace)


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
        ("dill._dill", "_create_array"): _dill_array,
        ("dill._dill", "_create_dtypemeta"): _dill_dtype_class,
        ("dill._dill", "_create_namedtuple"): _dill_namedtuple,
        ("jax._src.array", "_reconstruct_array"): _jax_array,
        ("jax._src.device_array", "reconstruct_device_array"): _jax_array,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct_array
        allowed[(module, "scalar")] = _numpy_scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _from_buffer
    for name in NUMPY_SCALARS:
        allowed[("numpy", name)] = getattr(np, name)
        # NumPy >= 1.25 names dtype classes (`numpy.dtypes.Float32DType`).
        dtype_class = type(np.dtype(name))
        allowed[("numpy.dtypes", dtype_class.__name__)] = dtype_class
    for name, dtype in TORCH_STORAGES.items():
        allowed[("torch", name)] = _StorageType(dtype)
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that rebuilds only containers and arrays.

    Allowed: dicts (also `OrderedDict`), lists, tuples, strings, numbers,
    NumPy arrays and scalars of non-object dtypes, and the forms other
    libraries give them: dill's arrays, dtype classes and named tuples
    (`dill._dill._create_array`, `_create_dtypemeta`,
    `_create_namedtuple`; a named tuple becomes a `Record`), JAX arrays
    (`jax._src.array._reconstruct_array`, and JAX < 0.4's
    `reconstruct_device_array`), which become NumPy arrays, and PyTorch
    tensors, which become NumPy arrays too (PyTorch's zip format refers to
    their bytes by key; `storages` maps a key to them). Each is rebuilt
    by a function of this module: an array reconstructor must hand over
    NumPy's own `_reconstruct`, as these libraries write it. Any other
    global in the pickle (dill's `_get_attr`, which fetches an attribute
    of any object, among them) raises `pickle.UnpicklingError` naming it,
    before anything is called.

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

    Raises:
        ValueError: the file is empty or ends before its pickle does.
    """
    with open(path, "rb") as f:
        try:
            return SafeUnpickler(f).load()
        except (EOFError, pickle.UnpicklingError) as error:
            # An empty file gives EOFError, a cut one "pickle data was
            # truncated"; a refused global keeps its own message.
            if isinstance(error, pickle.UnpicklingError) and (
                "truncated" not in str(error)
            ):
                raise
            size = os.path.getsize(path)
            raise ValueError(
                "`path` must be a whole pickle file. Received: "
                f"path={path!r}, "
                + ("an empty file" if not size else f"cut at {size} bytes")
            ) from None


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
