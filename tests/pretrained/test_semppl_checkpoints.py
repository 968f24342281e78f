"""SemPPL `.pkl` checkpoints against a NumPy copy of its Haiku network.

The files are written with dill in SemPPL's two layouts
(`tests/pretrained/semppl_files.py`): Haiku's module names, the device
axis, JAX and dill array reconstructors, dill's named tuples.
"""

import pickle

import dill
import numpy as np
import pytest

from keras_ssl.pretrained import load_semppl
from tests.pretrained import reference as ref
from tests.pretrained import semppl_files

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
EPS = 1e-5
BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}


class SemPPLReference:
    """semppl's `utils/networks.py` (`ResNetTorso` on Haiku's `BlockV1`,
    every conv and the max-pool with `"SAME"` padding) and BYOL's `MLP`,
    in inference mode, on Haiku `params` / `state` trees named as Haiku
    names them (`res_net50/~/block_group_0/~/block_0/~/conv_0`; the MLP's
    layers, made in its `__call__`, `projector/linear`,
    `projector/batch_norm`, `projector/linear_1`)."""

    def __init__(self, seed=0):
        self.random = ref.RandomParams(seed)
        self.params, self.state = {}, {}

    def _get(self, module, name, shape, kind):
        value = self.random.get(f"{module}/{name}", shape, kind)
        self.params.setdefault(module, {})[name] = self.random.values[
            f"{module}/{name}"
        ]
        return value

    def conv(self, x, module, out, kernel, stride):
        w = self._get(module, "w", (kernel, kernel, x.shape[-1], out), "kernel")
        return ref.conv(x, w, stride, "same")

    def bn(self, x, module):
        shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
        scale = self._get(module, "scale", shape, "gamma")
        offset = self._get(module, "offset", shape, "beta")
        stats = {}
        for ema, kind in (("mean_ema", "mean"), ("var_ema", "variance")):
            average = self.random.get(f"{module}/~/{ema}", shape, kind)
            self.state[f"{module}/~/{ema}"] = {
                "counter": np.array(1000, "int32"),
                "hidden": np.zeros(shape, "float32"),
                "average": self.random.values[f"{module}/~/{ema}"],
            }
            stats[ema] = average
        return (x - stats["mean_ema"]) / np.sqrt(
            stats["var_ema"] + EPS
        ) * scale + offset

    def linear(self, x, module, out, bias=True):
        y = x @ self._get(module, "w", (x.shape[-1], out), "kernel")
        return y + self._get(module, "b", (out,), "bias") if bias else y

    def block(self, x, name, channels, stride, bottleneck, project):
        shortcut = x
        if project:
            shortcut = self.conv(
                x, f"{name}/~/shortcut_conv", channels, 1, stride
            )
            shortcut = self.bn(shortcut, f"{name}/~/shortcut_batchnorm")
        if bottleneck:
            layers = (
                (channels // 4, 1, 1),
                (channels // 4, 3, stride),
                (channels, 1, 1),
            )
        else:
            layers = ((channels, 3, stride), (channels, 3, 1))
        for i, (out, kernel, s) in enumerate(layers):
            x = self.conv(x, f"{name}/~/conv_{i}", out, kernel, s)
            x = self.bn(x, f"{name}/~/batchnorm_{i}")
            if i < len(layers) - 1:
                x = ref.relu(x)
        return ref.relu(x + shortcut)

    def torso(self, images, depth, width):
        prefix = f"res_net{depth}"
        x = (images.astype("float64") - MEAN) / STD  # normalize_images
        x = self.conv(x, f"{prefix}/~/initial_conv", int(64 * width), 7, 2)
        x = ref.relu(self.bn(x, f"{prefix}/~/initial_batchnorm"))
        x = ref.max_pool(x, 3, 2, "same")
        bottleneck = depth >= 50
        channels = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
        for g, blocks in enumerate(BLOCKS[depth]):
            for b in range(blocks):
                x = self.block(
                    x,
                    f"{prefix}/~/block_group_{g}/~/block_{b}",
                    int(channels[g] * width),
                    2 if g and not b else 1,
                    bottleneck,
                    b == 0,
                )
        return x.mean(axis=(1, 2))

    def mlp(self, x, module, hidden, out):
        x = ref.relu(
            self.bn(
                self.linear(x, f"{module}/linear", hidden),
                f"{module}/batch_norm",
            )
        )
        return self.linear(x, f"{module}/linear_1", out, bias=False)

    def online(self, x, depth=50, width=0.25, classes=5):
        """BYOL's pretraining network: torso, projector, predictor and
        the online classifier."""
        features = self.torso(x, depth, width)
        projection = self.mlp(features, "projector", 32, 16)
        return {
            "features": features,
            "projection": projection,
            "prediction": self.mlp(projection, "predictor", 32, 16),
            "logits": self.linear(features, "classifier", classes),
        }


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def check(model, x, expected):
    outputs = model(x, training=False)
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        assert_close(outputs[key], value)


def test_pretraining_checkpoint(tmp_path):
    x = ref.images(1, 32)
    online, target = SemPPLReference(seed=0), SemPPLReference(seed=2)
    expected = {"online": online.online(x), "target": target.online(x)}
    path = semppl_files.write_pretraining(
        tmp_path / "pretrain.pkl",
        {
            "online": (online.params, online.state),
            "target": (target.params, target.state),
        },
        devices=2,
    )
    # SemPPL's own state: dill's pickle of JAX arrays with the device axis.
    raw = path.read_bytes()
    assert b"_reconstruct_array" in raw and b"jax._src.array" in raw
    for network in ("online", "target"):
        model = load_semppl(path, network=network)
        assert model.encoder.depth == 50
        assert model.encoder.width_multiplier == 0.25
        check(model, x, expected[network])
    # Only the reconstructors named in the allow-list are accepted.
    path.write_bytes(raw.replace(b"jax._src.array", b"jax._src.arrax"))
    with pytest.raises(pickle.UnpicklingError, match=r"jax\._src\.arrax"):
        load_semppl(path)


def test_linear_eval_checkpoint(tmp_path):
    # SemPPL's evaluation takes the whole online network of the pretraining
    # file as its backbone (heads and online classifier included) and
    # trains a new classifier, `linear`, on its features.
    x = ref.images(2, 32)
    reference = SemPPLReference(seed=1)
    online = reference.online(x, depth=18)
    backbone = (dict(reference.params), reference.state)
    logits = reference.linear(online["features"], "linear", 5)
    path = semppl_files.write_linear_eval(
        tmp_path / "linear-eval.pkl", backbone, reference.params["linear"]
    )
    raw = path.read_bytes()
    assert b"_create_array" in raw and b"_create_namedtuple" in raw
    model = load_semppl(path)
    assert model.encoder.depth == 18
    check(model, x, {**online, "logits": logits})
    with pytest.raises(ValueError, match="no target network.*backbone_params"):
        load_semppl(path, network="target")


def tiny_network(depth=18):
    reference = SemPPLReference()
    reference.torso(ref.images(1, 32), depth, 0.25)
    return reference


def write_renamed(tmp_path, reference, old, new):
    """A pretraining file with `old` replaced by `new` in module names."""
    params = {k.replace(old, new): v for k, v in reference.params.items()}
    return semppl_files.write_pretraining(
        tmp_path / "renamed.pkl", {"online": (params, reference.state)}
    )


def test_unknown_modules_are_refused_by_name(tmp_path):
    reference = tiny_network()
    reference.params["res_net18/~/block_group_0/~/block_0/~/sk_attention"] = {
        "w": np.zeros((1, 1, 16, 32), "float32")
    }
    path = semppl_files.write_pretraining(
        tmp_path / "sk.pkl", {"online": (reference.params, reference.state)}
    )
    with pytest.raises(ValueError, match="sk_attention"):
        load_semppl(path)


def test_guessed_mlp_names_are_refused(tmp_path):
    # `projector/~/linear` is not a name Haiku gives a layer made in
    # `MLP.__call__`: such a file is not read as a projection head.
    reference = tiny_network()
    features = np.zeros((1, 128))
    reference.mlp(features, "projector", 8, 4)
    path = write_renamed(tmp_path, reference, "projector/", "projector/~/")
    with pytest.raises(ValueError, match=r"projector/~/linear"):
        load_semppl(path)


def test_unknown_layouts_name_what_they_hold(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(
        dill.dumps(
            {"experiment_state": {"params": {}, "opt_state": ()}, "step": 1},
            protocol=2,
        )
    )
    with pytest.raises(ValueError, match=r"'opt_state', 'params'"):
        load_semppl(path)
    path = write_renamed(
        tmp_path, tiny_network(), "res_net18/~/initial_conv", "encoder/stem"
    )
    with pytest.raises(ValueError, match=r"\['encoder', 'res_net18'\]"):
        load_semppl(path)
    with pytest.raises(ValueError, match="`network` must be one of"):
        load_semppl(path, network="teacher")


def test_device_axis_must_be_on_every_leaf(tmp_path):
    reference = tiny_network()
    path = semppl_files.write_pretraining(
        tmp_path / "replicated.pkl",
        {"online": (reference.params, reference.state)},
        devices=3,
    )
    data = dill.loads(path.read_bytes())
    assert (
        data["experiment_state"]["online_params"]["res_net18/~/initial_conv"][
            "w"
        ].shape[0]
        == 3
    )
    conv = "res_net18/~/block_group_1/~/block_0/~/conv_0"
    data["experiment_state"]["online_params"][conv]["w"] = reference.params[
        conv
    ]["w"]
    path.write_bytes(dill.dumps(data, protocol=2))
    with pytest.raises(ValueError, match=f"{conv}/w.*device axis"):
        load_semppl(path)
