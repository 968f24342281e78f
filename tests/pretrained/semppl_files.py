"""Writes SemPPL checkpoints with dill, as SemPPL's code does, without JAX.

What SemPPL's files hold (checked against files that its own code wrote
with JAX 0.10 and Haiku 0.0.17, `benchmarks/semppl_checkpoint.py`):

- pretraining (`eval_experiment.py`'s `checkpoint_to_evaluate`): a dict
  `{"experiment_state": {"online_params", "online_state",
  "target_params", "target_state"}, "step", "rng"}`, every leaf a JAX
  array with a leading device axis, pickled by JAX as
  `jax._src.array._reconstruct_array(numpy's _reconstruct, args, state,
  {"weak_type": ...})`;
- linear evaluation (its `Checkpointer`): `experiment_state` is the
  `_EvalExperimentState` named tuple (dill pickles its class by value,
  `dill._dill._create_namedtuple`), first device's copy as NumPy arrays
  (dill: `dill._dill._create_array`), optax's `TraceState` and
  `EmptyState` named tuples, `backbone_opt_state=None`, a JAX `rng`.

Everything is dumped with `dill.dump(..., protocol=2)`, as SemPPL does.
A stand-in for `jax._src.array` lives in `sys.modules` only while a file
is written (`pytest.MonkeyPatch.context`), so that the pickle names JAX's
reconstructor without JAX being imported.
"""

import collections
import sys
import types

import dill
import numpy as np
import pytest

EVAL_STATE_FIELDS = (
    "backbone_params",
    "classif_params",
    "backbone_state",
    "backbone_opt_state",
    "classif_opt_state",
)


class _JaxArray:
    """Pickles as JAX >= 0.4 pickles a `jax.Array`."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __reduce__(self):
        reconstruct = sys.modules["jax._src.array"]._reconstruct_array
        function, args, state = self.value.__reduce__()
        return reconstruct, (function, args, state, {"weak_type": False})


def _dump(path, data):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _fake_jax(monkeypatch)
        with open(path, "wb") as f:
            dill.dump(data, f, protocol=2)
    return path


def _fake_jax(monkeypatch):
    modules = {
        name: types.ModuleType(name)
        for name in ("jax", "jax._src", "jax._src.array")
    }

    def _reconstruct_array(*args):
        raise AssertionError("only written, never called")

    _reconstruct_array.__module__ = "jax._src.array"
    _reconstruct_array.__qualname__ = "_reconstruct_array"
    modules["jax._src.array"]._reconstruct_array = _reconstruct_array
    modules["jax"]._src = modules["jax._src"]
    modules["jax._src"].array = modules["jax._src.array"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def _map(function, tree):
    if isinstance(tree, dict):
        return {k: _map(function, v) for k, v in tree.items()}
    return function(tree)


def replicate(tree, devices):
    """A Haiku tree as `jax.pmap` leaves it: a leading device axis."""
    return _map(
        lambda v: np.broadcast_to(v, (devices,) + np.shape(v)).copy(), tree
    )


def write_pretraining(path, networks, devices=2):
    """Writes `networks` (`{"online": (params, state), "target": ...}`,
    Haiku trees without the device axis) in the pretraining layout."""
    state = {}
    for name, (params, bn_state) in networks.items():
        for kind, tree in (("params", params), ("state", bn_state)):
            state[f"{name}_{kind}"] = _map(_JaxArray, replicate(tree, devices))
    data = {
        "experiment_state": state,
        "step": 10,
        "rng": _JaxArray(np.array([0, 3], "uint32")),
    }
    return _dump(path, data)


def write_linear_eval(path, backbone, classifier):
    """Writes a linear-evaluation checkpoint as SemPPL's `Checkpointer`
    does: `backbone = (params, state)`, `classifier` the `linear` module's
    `{"w", "b"}`."""
    state_type = collections.namedtuple(
        "_EvalExperimentState",
        EVAL_STATE_FIELDS,
        module="semppl.eval_experiment",
    )
    trace_state = collections.namedtuple(
        "TraceState", ["trace"], module="optax._src.transform"
    )
    empty_state = collections.namedtuple(
        "EmptyState", [], module="optax._src.base"
    )
    classif_params = {"linear": dict(classifier)}
    experiment_state = state_type(
        backbone_params=backbone[0],
        classif_params=classif_params,
        backbone_state=backbone[1],
        backbone_opt_state=None,
        classif_opt_state=(
            trace_state(trace=_map(np.zeros_like, classif_params)),
            empty_state(),
        ),
    )
    data = {
        "experiment_state": experiment_state,
        "step": 1,
        "rng": _JaxArray(np.array([0, 5], "uint32")),
    }
    return _dump(path, data)
