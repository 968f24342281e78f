"""SimCLR checkpoints: TF1, TF2 and SavedModel, against a NumPy SimCLR."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.backbones import ResNet
from keras_ssl.pretrained import PretrainedModel
from keras_ssl.pretrained import load_simclr
from keras_ssl.pretrained import save_simclr
from tests.pretrained import reference as ref

BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
EPS = 1e-5


class SimCLRReference:
    """google-research/simclr's ResNet and heads, in inference mode.

    Written from `tf2/resnet.py` and `tf2/model.py` (`resnet.py` and
    `model_util.py` for TF1, which build the same layers in the same
    order). Parameters are named as the chosen checkpoint format names
    them: `"tf1"` by TF1's per-type layer counters in creation order,
    `"tf2"` by their path in the Keras object tree.
    """

    def __init__(self, naming, seed=0):
        self.naming = naming
        self.params = ref.RandomParams(seed)
        self.counters = {"conv2d": 0, "batch_normalization": 0}

    def _name(self, layer, tf1_scope, tf2_path):
        if self.naming == "tf2":
            return tf2_path
        index = self.counters[layer]
        self.counters[layer] += 1
        return f"{tf1_scope}/{layer}" + (f"_{index}" if index else "")

    def conv(self, x, path, filters, kernel, stride):
        """`Conv2dFixedPadding` at `path` (a list slot of the TF2 tree)."""
        name = self._name("conv2d", "base_model", f"{path}/conv2d")
        return self.raw_conv(x, name, filters, kernel, stride)

    def raw_conv(self, x, name, filters, kernel, stride):
        w = self.params.get(
            f"{name}/kernel", (kernel, kernel, x.shape[-1], filters), "kernel"
        )
        if stride > 1:
            begin, end = (kernel - 1) // 2, kernel // 2
            x = ref.pad(x, begin, end, begin, end)
            return ref.conv(x, w, stride, "valid")
        return ref.conv(x, w, 1, "same")

    def bn(self, x, path, relu=True, center=True, name=None):
        """`BatchNormRelu`: its BN is the `bn` attribute in TF2."""
        if name is None:
            name = self._name("batch_normalization", "base_model", f"{path}/bn")
        channels = (x.shape[-1],)
        get = self.params.get
        x = ref.batch_norm(
            x,
            get(f"{name}/gamma", channels, "gamma"),
            get(f"{name}/beta", channels, "beta") if center else None,
            get(f"{name}/moving_mean", channels, "mean"),
            get(f"{name}/moving_variance", channels, "variance"),
            EPS,
        )
        return ref.relu(x) if relu else x

    def shortcut(self, x, path, filters, stride, resnet_d):
        if not resnet_d:
            x = self.conv(x, f"{path}/0", filters, 1, stride)
            return self.bn(x, f"{path}/1", relu=False)
        slot = 0
        if stride > 1:
            x = ref.pad(x, 0, 1, 0, 1)  # FixedPadding(2)
            slot = 1
        x = ref.avg_pool(x, 2, stride, "same" if stride == 1 else "valid")
        x = self.conv(x, f"{path}/{slot + 1}", filters, 1, 1)
        return self.bn(x, f"{path}/{slot + 2}", relu=False)

    def sk_conv(self, x, path, filters, stride, sk_ratio):
        x = self.conv(x, f"{path}/conv2d_fixed_padding", 2 * filters, 3, stride)
        x = self.bn(x, f"{path}/batch_norm_relu")
        branches = np.stack(np.split(x, 2, axis=-1))
        pooled = branches.sum(axis=0).mean(axis=(1, 2), keepdims=True)
        mid = max(int(filters * sk_ratio), 32)
        name = self._name("conv2d", "base_model", f"{path}/conv2d_0")
        pooled = self.raw_conv(pooled, name, mid, 1, 1)
        pooled = self.bn(pooled, f"{path}/batch_norm_relu_1")
        name = self._name("conv2d", "base_model", f"{path}/conv2d_1")
        mixing = self.raw_conv(pooled, name, 2 * filters, 1, 1)
        mixing = np.stack(np.split(mixing, 2, axis=-1))
        mixing = np.exp(mixing - mixing.max(axis=0))
        mixing = mixing / mixing.sum(axis=0)
        return (branches * mixing).sum(axis=0)

    def bottleneck(self, x, path, filters, stride, project, sk_ratio):
        shortcut = x
        if project:
            shortcut = self.shortcut(
                x, f"{path}/projection_layers", 4 * filters, stride, sk_ratio
            )
        main = f"{path}/conv_relu_dropblock_layers"
        x = self.bn(self.conv(x, f"{main}/0", filters, 1, 1), f"{main}/1")
        if sk_ratio:
            x = self.sk_conv(x, f"{main}/3", filters, stride, sk_ratio)
            last = 5
        else:
            x = self.conv(x, f"{main}/3", filters, 3, stride)
            x = self.bn(x, f"{main}/4")
            last = 6
        x = self.conv(x, f"{main}/{last}", 4 * filters, 1, 1)
        x = self.bn(x, f"{main}/{last + 1}", relu=False)
        return ref.relu(x + shortcut)

    def residual(self, x, path, filters, stride, project, resnet_d):
        shortcut = x
        if project:
            shortcut = self.shortcut(
                x, f"{path}/shortcut_layers", filters, stride, resnet_d
            )
        main = f"{path}/conv2d_bn_layers"
        x = self.bn(self.conv(x, f"{main}/0", filters, 3, stride), f"{main}/1")
        x = self.conv(x, f"{main}/2", filters, 3, 1)
        x = self.bn(x, f"{main}/3", relu=False)
        return ref.relu(x + shortcut)

    def resnet(self, x, depth, base, sk_ratio, cifar=False):
        """`base` = 64 * width_multiplier channels."""
        root = "model/resnet_model"
        stem = f"{root}/initial_conv_relu_max_pool"
        x = x.astype("float64")
        if cifar:
            x = self.bn(self.conv(x, f"{stem}/0", base, 3, 1), f"{stem}/2")
        else:
            if sk_ratio:
                x = self.bn(
                    self.conv(x, f"{stem}/0", base // 2, 3, 2), f"{stem}/1"
                )
                x = self.bn(
                    self.conv(x, f"{stem}/2", base // 2, 3, 1), f"{stem}/3"
                )
                x = self.bn(self.conv(x, f"{stem}/4", base, 3, 1), f"{stem}/6")
            else:
                x = self.bn(self.conv(x, f"{stem}/0", base, 7, 2), f"{stem}/2")
            x = ref.max_pool(x, 3, 2, "same")
        for group, blocks in enumerate(BLOCKS[depth]):
            for block in range(blocks):
                path = f"{root}/block_groups/{group}/layers/{block}"
                args = (
                    path,
                    base * 2**group,
                    2 if group and not block else 1,
                    block == 0,
                )
                if depth >= 50:
                    x = self.bottleneck(x, *args, sk_ratio)
                else:
                    x = self.residual(x, *args, bool(sk_ratio))
        return x.mean(axis=(1, 2))

    def heads(self, h, num_layers, out_dim, num_classes, ft_layer):
        hiddens = [h]
        for j in range(num_layers):
            last = j == num_layers - 1
            if self.naming == "tf2":
                path = f"model/_projection_head/linear_layers/{j}"
                dense, bn = f"{path}/dense", f"{path}/bn_relu/bn"
            else:
                path = f"head_contrastive/nl_{j}"
                dense, bn = f"{path}/dense", f"{path}/batch_normalization"
            width = out_dim if last else h.shape[-1]
            w = self.params.get(
                f"{dense}/kernel", (hiddens[-1].shape[-1], width), "kernel"
            )
            x = hiddens[-1] @ w
            x = self.bn(x, None, relu=not last, center=not last, name=bn)
            hiddens.append(x)
        if self.naming == "tf2":
            dense = "model/supervised_head/linear_layer/dense"
        else:
            dense = "head_supervised/linear_layer/dense"
        x = hiddens[ft_layer]
        w = self.params.get(
            f"{dense}/kernel", (x.shape[-1], num_classes), "kernel"
        )
        b = self.params.get(f"{dense}/bias", (num_classes,), "bias")
        return hiddens[-1] if num_layers else None, x @ w + b


def write_tf1(values, directory):
    prefix = str(directory / "model.ckpt-100")
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(values[n]) for n in names],
    )
    with open(directory / "checkpoint", "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-100"\n')
    return directory


def object_tree(values):
    """Nested trackables whose paths are the names in `values`."""
    tree = {}
    for name, value in values.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    variables = []

    def build(node, name):
        if not isinstance(node, dict):
            variable = tf.Variable(node, trainable="moving" not in name)
            variables.append(variable)
            return variable
        if all(key.isdigit() for key in node):
            # A layer list: slots without variables hold plain modules.
            items = [tf.Module() for _ in range(max(map(int, node)) + 1)]
            for key, child in node.items():
                items[int(key)] = build(child, key)
            return items
        module = tf.Module()
        for key, child in node.items():
            setattr(module, key, build(child, key))
        return module

    return build(tree, ""), variables


def write_tf2(values, directory, saved_model):
    root, variables = object_tree(values)
    if saved_model:
        # SimCLR's export module also lists the trainable variables, which
        # the saver reaches first.
        module = tf.Module()
        module.model = root.model
        module.trainable_variables_list = [v for v in variables if v.trainable]
        tf.saved_model.save(module, str(directory))
        return directory
    tf.train.Checkpoint(model=root.model).write(str(directory / "ckpt-1"))
    return directory / "ckpt-1"


CASES = {
    # naming, depth, base width, sk_ratio, cifar, head layers, ft_layer
    "tf1-r50-sk": ("tf1", 50, 16, 0.0625, False, 3, 1),
    "tf1-r18-cifar-v1": ("tf1", 18, 16, 0.0, True, 0, 0),
    "tf2-r50": ("tf2", 50, 16, 0.0, False, 3, 0),
    "tf2-r18-resnet-d": ("tf2", 18, 16, 0.0625, False, 2, 1),
    "savedmodel-r50-sk": ("savedmodel", 50, 16, 0.5, False, 3, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_reference(case, tmp_path):
    naming, depth, base, sk_ratio, cifar, head_layers, ft_layer = CASES[case]
    x = ref.images(2, 32)
    reference = SimCLRReference("tf1" if naming == "tf1" else "tf2")
    features = reference.resnet(x, depth, base, sk_ratio, cifar)
    projection, logits = reference.heads(features, head_layers, 8, 5, ft_layer)
    values = reference.params.values
    if naming == "tf1":
        path = write_tf1(values, tmp_path)
    else:
        path = write_tf2(values, tmp_path, naming == "savedmodel")

    model = load_simclr(path, ft_layer=ft_layer)
    outputs = model(x, training=False)
    encoder = model.encoder
    assert encoder.depth == depth
    assert encoder.width_multiplier == base / 64
    assert encoder.stem == ("cifar" if cifar else "imagenet")
    if depth >= 50:
        assert encoder.sk_ratio == sk_ratio
    np.testing.assert_allclose(
        outputs["features"], features, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-4, atol=1e-4)
    if head_layers:
        np.testing.assert_allclose(
            outputs["projection"], projection, rtol=1e-4, atol=1e-4
        )
    else:
        assert "projection" not in outputs


def test_not_a_simclr_checkpoint(tmp_path):
    write_tf1(
        {"base_model/conv2d/kernel": np.zeros((7, 7, 3, 4), "float32")},
        tmp_path,
    )
    with pytest.raises(ValueError, match="does not hold a SimCLR ResNet"):
        load_simclr(tmp_path)


def test_empty_directory(tmp_path):
    with pytest.raises(ValueError, match="holds no SavedModel"):
        load_simclr(tmp_path)


@pytest.mark.parametrize("case", ["tf1-r50-sk", "tf2-r50"])
def test_save_simclr_writes_the_reference_tf1_checkpoint(case, tmp_path):
    naming, depth, base, sk_ratio, cifar, head_layers, ft_layer = CASES[case]
    x = ref.images(2, 32)
    reference = SimCLRReference(naming)
    features = reference.resnet(x, depth, base, sk_ratio, cifar)
    reference.heads(features, head_layers, 8, 5, ft_layer)
    (tmp_path / "in").mkdir()
    if naming == "tf1":
        path = write_tf1(reference.params.values, tmp_path / "in")
    else:
        path = write_tf2(reference.params.values, tmp_path / "in", False)
    model = load_simclr(path, ft_layer=ft_layer)

    prefix = save_simclr(model, tmp_path / "out", step=7)
    assert prefix.endswith("model.ckpt-7")
    assert tf.train.latest_checkpoint(str(tmp_path / "out")) == prefix
    written = tf.train.load_checkpoint(prefix)
    shapes = written.get_variable_to_shape_map()
    if naming == "tf1":
        # Exactly the reference's variables, names and values.
        assert set(shapes) == set(reference.params.values)
        for name, value in reference.params.values.items():
            np.testing.assert_array_equal(written.get_tensor(name), value)
    again = load_simclr(tmp_path / "out", ft_layer=ft_layer)
    expected = model(x, training=False)
    for key, value in again(x, training=False).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-6)


def test_save_simclr_refuses_other_layouts(tmp_path):
    encoder = ResNet(depth=18, width_multiplier=0.25, stem="cifar")
    with pytest.raises(ValueError, match="shortcut_pool"):
        save_simclr(PretrainedModel(encoder), tmp_path)
    encoder = ResNet(
        depth=18, width_multiplier=0.25, shortcut_pool="all", resnet_d=True
    )
    with pytest.raises(ValueError, match="True with depth=18"):
        save_simclr(PretrainedModel(encoder), tmp_path)
