"""SemPPL `.pkl` checkpoints against a NumPy copy of its Haiku network."""

import pickle

import numpy as np
import pytest

from keras_ssl.pretrained import load_semppl
from tests.pretrained import reference as ref

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
EPS = 1e-5
BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}


class SemPPLReference:
    """semppl's `utils/networks.py` (`ResNetTorso` on Haiku's `BlockV1`,
    every conv and the max-pool with `"SAME"` padding) and BYOL's `MLP`,
    in inference mode, on Haiku `params` / `state` trees."""

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
                self.linear(x, f"{module}/~/linear", hidden),
                f"{module}/~/batch_norm",
            )
        )
        return self.linear(x, f"{module}/~/linear_1", out, bias=False)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_pretraining_checkpoint(tmp_path):
    x = ref.images(2, 32)
    reference = SemPPLReference()
    features = reference.torso(x, 50, 0.25)
    projection = reference.mlp(features, "projector", 32, 16)
    prediction = reference.mlp(projection, "predictor", 32, 16)
    # As saved from a pmapped state: one leading replica axis.
    replicated = {
        module: {k: v[None] for k, v in values.items()}
        for module, values in reference.params.items()
    }
    state = {
        module: {k: v[None] for k, v in values.items()}
        for module, values in reference.state.items()
    }
    path = tmp_path / "pretrain.pkl"
    path.write_bytes(
        pickle.dumps(
            {
                "experiment_state": {
                    "online_params": replicated,
                    "online_state": state,
                    "target_params": replicated,
                },
                "step": 10,
                "rng": np.zeros(2, "uint32"),
            },
            protocol=2,  # SemPPL dumps with dill, protocol 2
        )
    )
    model = load_semppl(path)
    outputs = model(x, training=False)
    assert model.encoder.depth == 50 and model.encoder.width_multiplier == 0.25
    assert_close(outputs["features"], features)
    assert_close(outputs["projection"], projection)
    assert_close(outputs["prediction"], prediction)


def test_linear_eval_checkpoint(tmp_path):
    x = ref.images(2, 32)
    reference = SemPPLReference(seed=1)
    features = reference.torso(x, 18, 0.25)
    backbone = dict(reference.params)
    logits = reference.linear(features, "linear", 5)
    classif = {"linear": reference.params["linear"]}
    path = tmp_path / "linear-eval.pkl"
    path.write_bytes(
        pickle.dumps(
            {
                "experiment_state": {
                    "backbone_params": backbone,
                    "backbone_state": reference.state,
                    "classif_params": classif,
                },
                "step": 1,
            }
        )
    )
    model = load_semppl(path)
    outputs = model(x, training=False)
    assert model.encoder.depth == 18
    assert_close(outputs["features"], features)
    assert_close(outputs["logits"], logits)


def test_unknown_modules_are_refused(tmp_path):
    reference = SemPPLReference()
    reference.torso(ref.images(1, 32), 18, 0.25)
    reference.params["res_net18/~/block_group_0/~/block_0/~/sk_attention"] = {
        "w": np.zeros((1, 1, 16, 32), "float32")
    }
    path = tmp_path / "sk.pkl"
    state = {"online_params": reference.params, "online_state": reference.state}
    path.write_bytes(pickle.dumps({"experiment_state": state}))
    with pytest.raises(ValueError, match="sk_attention"):
        load_semppl(path)
