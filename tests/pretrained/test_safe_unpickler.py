import _codecs
import collections
import fractions
import io
import os
import pickle
import zipfile

import dill
import numpy as np
import pytest

from keras_ssl.pretrained.safe_unpickler import SafeUnpickler
from keras_ssl.pretrained.safe_unpickler import load_pickle
from keras_ssl.pretrained.safe_unpickler import load_torch
from tests.pretrained import torch_files


class Hostile:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_plain_tree_round_trip(tmp_path):
    tree = {
        "params": {"conv": {"w": np.arange(6, dtype="float32").reshape(2, 3)}},
        "step": 7,
        "scale": np.float32(0.5),
        "names": ["a", "b"],
    }
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"tree{protocol}.pkl"
        path.write_bytes(pickle.dumps(tree, protocol=protocol))
        loaded = load_pickle(path)
        np.testing.assert_array_equal(
            loaded["params"]["conv"]["w"], tree["params"]["conv"]["w"]
        )
        assert loaded["step"] == 7 and loaded["names"] == ["a", "b"]
        assert loaded["scale"] == np.float32(0.5)


def test_hostile_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"weights": Hostile(marker)})
    with pytest.raises(pickle.UnpicklingError, match=r"\.system"):
        SafeUnpickler(io.BytesIO(data)).load()
    assert not marker.exists()
    # The same file runs the command under a plain unpickler.
    pickle.loads(data)
    assert marker.exists()


def test_hostile_torch_file_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    with zipfile.ZipFile(path, "w") as f:
        f.writestr(
            "archive/data.pkl", pickle.dumps({"encoder": Hostile(marker)})
        )
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        load_torch(path)
    assert not marker.exists()


def test_object_arrays_and_other_classes_are_refused():
    data = pickle.dumps(np.array([{"a": 1}], dtype=object))
    loaded = SafeUnpickler(io.BytesIO(data)).load()  # only builtins inside
    assert loaded[0] == {"a": 1}
    data = pickle.dumps(fractions.Fraction(1, 3))
    with pytest.raises(pickle.UnpicklingError, match="fractions.Fraction"):
        SafeUnpickler(io.BytesIO(data)).load()
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        SafeUnpickler(io.BytesIO(b"\x80\x02X\x01\x00\x00\x00aQ.")).load()


def test_torch_file_without_torch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(3, 4)).astype("float32")
    tree = {
        "encoder": {
            "w": rng.normal(size=(2, 3, 3, 3)).astype("float32"),
            "n": np.array(5, dtype="int64"),
            "t": ("transposed", matrix),
            "h": np.arange(4, dtype="float16"),
        },
        "epoch": 3,
    }
    path = torch_files.write(tmp_path / "x.pth.tar", tree, monkeypatch)
    monkeypatch.undo()
    loaded = load_torch(path)
    assert loaded["epoch"] == 3
    np.testing.assert_array_equal(loaded["encoder"]["w"], tree["encoder"]["w"])
    np.testing.assert_array_equal(loaded["encoder"]["t"], matrix.T)
    assert (
        loaded["encoder"]["n"] == 5 and loaded["encoder"]["n"].dtype == "int64"
    )
    assert loaded["encoder"]["h"].dtype == "float16"


def test_legacy_torch_format_is_named(tmp_path):
    path = tmp_path / "old.pth.tar"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C))
    with pytest.raises(ValueError, match="zip format"):
        load_torch(path)


def test_matches_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "encoder": {
            "conv.weight": torch.randn(4, 3, 3, 3),
            "fc.weight": torch.randn(5, 6).t(),
            "bn.num_batches_tracked": torch.tensor(3),
            "half": torch.randn(7).half(),
            "bf16": torch.randn(7).bfloat16(),
        },
        "epoch": 2,
    }
    path = tmp_path / "state.pth.tar"
    torch.save(state, path)
    loaded = load_torch(path)
    for key, tensor in state["encoder"].items():
        np.testing.assert_array_equal(
            loaded["encoder"][key],
            tensor.float().numpy().astype(loaded["encoder"][key].dtype),
        )


class Reduces:
    """Pickles as `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_dill_tree(tmp_path):
    # dill writes every array through `dill._dill._create_array` and each
    # named tuple's class by value (`_create_namedtuple`).
    state = collections.namedtuple("State", ["params", "count"], module="m")
    tree = {
        "w": np.arange(6, dtype="float32").reshape(2, 3),
        "h": np.arange(3, dtype="float16"),
        "counter": np.array(7, "int32"),
        "rng": np.array([0, 3], "uint32"),
        "state": state(params={"b": np.ones(2)}, count=3),
        "scale": np.float32(0.5),
        "dtype_class": type(np.dtype("float32")),
    }
    data = dill.dumps(tree, protocol=2)
    assert b"_create_array" in data and b"_create_namedtuple" in data
    loaded = SafeUnpickler(io.BytesIO(data)).load()
    for key in ("w", "h", "counter", "rng"):
        assert type(loaded[key]) is np.ndarray
        assert loaded[key].dtype == tree[key].dtype
        np.testing.assert_array_equal(loaded[key], tree[key])
    assert loaded["state"].count == 3 and loaded["state"]._fields == (
        "params",
        "count",
    )
    np.testing.assert_array_equal(loaded["state"].params["b"], np.ones(2))
    assert loaded["state"]._asdict()["count"] == 3
    assert loaded["scale"] == np.float32(0.5)
    # dill's dtype classes (`_create_dtypemeta`, as older NumPy needs).
    data = pickle.dumps(Reduces(dill._dill._create_dtypemeta, np.float32))
    assert SafeUnpickler(io.BytesIO(data)).load() is type(tree["w"].dtype)


def test_jax_array_form_without_jax(tmp_path):
    from tests.pretrained import semppl_files

    path = semppl_files.write_pretraining(
        tmp_path / "p.pkl", {"online": ({"m": {"w": np.eye(2)}}, {})}, 3
    )
    assert b"jax._src.array\n_reconstruct_array" in path.read_bytes()
    loaded = load_pickle(path)
    w = loaded["experiment_state"]["online_params"]["m"]["w"]
    assert type(w) is np.ndarray and w.shape == (3, 2, 2)
    np.testing.assert_array_equal(w[2], np.eye(2))
    np.testing.assert_array_equal(loaded["rng"], [0, 3])
    # JAX < 0.4 (SemPPL pins 0.3.25) names `device_array`'s reconstructor,
    # with the same arguments.
    old = path.read_bytes().replace(
        b"jax._src.array\n_reconstruct_array\n",
        b"jax._src.device_array\nreconstruct_device_array\n",
    )
    loaded = SafeUnpickler(io.BytesIO(old)).load()
    w = loaded["experiment_state"]["online_params"]["m"]["w"]
    np.testing.assert_array_equal(w, np.broadcast_to(np.eye(2), (3, 2, 2)))


@pytest.mark.parametrize(
    "reduction",
    [
        # An array reconstructor handed anything but NumPy's `_reconstruct`.
        (dill._dill._create_array, _codecs.encode, ("x", "latin1"), None),
        (dill._dill._create_array, dict, (), {}, {"a": 1}),
        # A named tuple whose field names are not identifiers.
        (dill._dill._create_namedtuple, "T", ("a=1",), "m"),
        (dill._dill._create_namedtuple, "T;", ("a",), "m"),
        (dill._dill._create_namedtuple, "T", ("__setstate__",), "m"),
        # dill's `_get_attr` fetches any attribute of any object.
        (dill._dill._get_attr, {}, "pop"),
        # A dtype class of anything but a NumPy number.
        (dill._dill._create_dtypemeta, dict),
    ],
    ids=[
        "array",
        "array_dict",
        "fields",
        "name",
        "private_field",
        "get_attr",
        "dtype",
    ],
)
def test_hostile_dill_reconstructions_are_refused(reduction):
    data = pickle.dumps(Reduces(*reduction), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        SafeUnpickler(io.BytesIO(data)).load()


def test_hostile_dill_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    hostile = Reduces(
        dill._dill._create_array, os.system, (f"touch {marker}",), None
    )
    data = dill.dumps({"w": np.ones(2), "x": hostile}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"\.system"):
        SafeUnpickler(io.BytesIO(data)).load()
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="getattr"):
        SafeUnpickler(io.BytesIO(dill.dumps("a".upper, protocol=2))).load()
