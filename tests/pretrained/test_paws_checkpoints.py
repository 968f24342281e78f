"""PAWS `.pth.tar` checkpoints against a NumPy copy of suncet's network."""

import numpy as np
import pytest

from keras_ssl.pretrained import load_paws
from tests.pretrained import reference as ref
from tests.pretrained import torch_files

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
EPS = 1e-5


class PAWSReference:
    """suncet's `src/resnet.py` (torchvision's ResNet v1.5 with `widen`),
    its projection head `fc` and prediction head `pred`, in eval mode, on
    PyTorch-layout parameters named as in its `state_dict`."""

    def __init__(self, seed=0):
        self.params = ref.RandomParams(seed)

    def conv(self, x, name, out, kernel, stride):
        w = self.params.get(
            f"{name}.weight", (out, x.shape[-1], kernel, kernel), "torch_kernel"
        )
        # nn.Conv2d(padding=kernel // 2): the same pad on every side.
        return ref.conv(x, w.transpose(2, 3, 1, 0), stride, kernel // 2)

    def bn(self, x, name):
        c = (x.shape[-1],)
        get = self.params.get
        self.params.values[f"{name}.num_batches_tracked"] = np.array(9)
        return ref.batch_norm(
            x,
            get(f"{name}.weight", c, "gamma"),
            get(f"{name}.bias", c, "beta"),
            get(f"{name}.running_mean", c, "mean"),
            get(f"{name}.running_var", c, "variance"),
            EPS,
        )

    def linear(self, x, name, out):
        w = self.params.get(
            f"{name}.weight", (out, x.shape[-1]), "torch_kernel"
        )
        b = self.params.get(f"{name}.bias", (out,), "bias")
        return x @ w.T + b

    def bottleneck(self, x, name, planes, stride):
        identity = x
        out = ref.relu(
            self.bn(self.conv(x, f"{name}.conv1", planes, 1, 1), f"{name}.bn1")
        )
        out = ref.relu(
            self.bn(
                self.conv(out, f"{name}.conv2", planes, 3, stride),
                f"{name}.bn2",
            )
        )
        out = self.bn(
            self.conv(out, f"{name}.conv3", 4 * planes, 1, 1), f"{name}.bn3"
        )
        if stride != 1 or x.shape[-1] != 4 * planes:
            identity = self.conv(
                x, f"{name}.downsample.0", 4 * planes, 1, stride
            )
            identity = self.bn(identity, f"{name}.downsample.1")
        return ref.relu(out + identity)

    def backbone(self, x, widen, layers=(3, 4, 6, 3)):
        x = (x.astype("float64") - MEAN) / STD  # transforms.Normalize
        planes = int(64 * widen)
        x = ref.relu(self.bn(self.conv(x, "conv1", planes, 7, 2), "bn1"))
        x = ref.max_pool(x, 3, 2, 1)
        for i, blocks in enumerate(layers):
            for b in range(blocks):
                stride = 2 if i and not b else 1
                x = self.bottleneck(x, f"layer{i + 1}.{b}", planes, stride)
            planes *= 2
        return x.mean(axis=(1, 2))

    def projection(self, h, output_dim):
        hidden = h.shape[-1]
        x = ref.relu(self.bn(self.linear(h, "fc.fc1", hidden), "fc.bn1"))
        x = ref.relu(self.bn(self.linear(x, "fc.fc2", hidden), "fc.bn2"))
        return self.linear(x, "fc.fc3", output_dim)

    def prediction(self, z):
        dim = z.shape[-1]
        x = self.linear(self.bn(z, "pred.bn1"), "pred.fc1", dim // 4)
        return self.linear(ref.relu(self.bn(x, "pred.bn2")), "pred.fc2", dim)

    def fine_tuned(self, h, num_classes):
        x = ref.relu(self.bn(self.linear(h, "fc.fc1", h.shape[-1]), "fc.bn1"))
        return self.linear(x, "fc.fc2", num_classes)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stage", ["pretrained", "finetuned"])
def test_outputs_equal_reference(stage, tmp_path, monkeypatch):
    x = ref.images(2, 32)
    reference = PAWSReference()
    features = reference.backbone(x, widen=0.25)
    if stage == "pretrained":
        projection = reference.projection(features, 16)
        prediction = reference.prediction(projection)
    else:
        logits = reference.fine_tuned(features, 5)
    # DistributedDataParallel's prefix, as in the published files.
    state = {f"module.{k}": v for k, v in reference.params.values.items()}
    path = torch_files.write(
        tmp_path / "paws.pth.tar",
        {
            "encoder": state,
            "epoch": 300,
            "opt": {"state": {}, "param_groups": []},
        },
        monkeypatch,
    )
    monkeypatch.undo()  # the reader runs without any `torch` module

    model = load_paws(path)
    outputs = model(x, training=False)
    assert model.encoder.depth == 50 and model.encoder.width_multiplier == 0.25
    assert_close(outputs["features"], features)
    if stage == "pretrained":
        assert_close(outputs["projection"], projection)
        assert_close(outputs["prediction"], prediction)
        assert "logits" not in outputs
    else:
        assert_close(outputs["logits"], logits)
        assert "projection" not in outputs


def test_not_a_resnet(tmp_path, monkeypatch):
    state = {"conv1.weight": np.zeros((16, 3, 7, 7), "float32")}
    path = torch_files.write(
        tmp_path / "x.pth.tar", {"encoder": state}, monkeypatch
    )
    with pytest.raises(ValueError, match="not a bottleneck ResNet"):
        load_paws(path)
