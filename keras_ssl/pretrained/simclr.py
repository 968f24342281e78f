"""SimCLR v1/v2 checkpoints (TF1, TF2 and SavedModel) as keras_ssl models.

google-research/simclr published its networks as TF1 checkpoints, whose
variables are named by TF1's layer counters (`base_model/conv2d_17/kernel`,
`base_model/batch_normalization_17/gamma`, in the order the graph created
them), and as TF2 checkpoints and SavedModels, whose variables are named by
their place in the Keras object tree
(`model/resnet_model/block_groups/0/layers/0/projection_layers/0/conv2d/
kernel`). Both name the same network; `_units` lists its layers in the
order TF1 created them, each with its TF2 path and the keras_ssl variable it
becomes.
"""

import os
import re

import keras
import numpy as np

from keras_ssl.backbones.resnet import STAGE_BLOCKS
from keras_ssl.backbones.resnet import ResNet
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.pretrained.pretrained_model import PretrainedModel
from keras_ssl.pretrained.pretrained_model import assign
from keras_ssl.pretrained.pretrained_model import relative_path

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
# SimCLRv2's sk_ratio; any ratio gives the same network while every SK
# descriptor is at its 32-channel floor, as in ResNet-50 1x.
DEFAULT_SK_RATIO = 0.0625


def load_simclr(path, ft_layer=0):
    """Loads a SimCLR v1/v2 checkpoint as a `PretrainedModel`.

    Reads the TF1 checkpoints and the TF2 checkpoints and SavedModels of
    google-research/simclr. Depth (18 to 200), width, selective kernels
    (and their `sk_ratio`), the stem, the projection head (any number of
    layers; absent in SimCLRv1's TF2 exports) and the supervised head are
    read off the variable names and shapes. The network's outputs equal
    the reference's in inference mode.

    Args:
        path: str. A SavedModel directory (with `saved_model.pb`), a
            directory holding a TF checkpoint, or a checkpoint prefix
            (`.../model.ckpt-1000`).
        ft_layer: int. Which projection-head activation the supervised
            head reads: SimCLRv2 fine-tuned with 1% and 10% of the labels
            from the head's first layer (`1`), with 100% and for linear
            evaluation from the encoder output (`0`). The checkpoint cannot
            tell, since both have the encoder's width. Defaults to `0`.

    Returns:
        A `keras_ssl.pretrained.PretrainedModel` whose encoder is a
        `keras_ssl.backbones.ResNet` taking images in `[0, 1]`.

    Example:

    ```python
    model = keras_ssl.pretrained.load_simclr("r50_1x_sk0/saved_model")
    logits = model(images)["logits"]
    ```

    References:
        - [Chen et al., 2020a](https://arxiv.org/abs/2002.05709) (SimCLR).
        - [Chen et al., 2020b](https://arxiv.org/abs/2006.10029)
          (SimCLRv2).
    """
    # TensorFlow is an optional dependency: imported where it is needed.
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    reader = tf.train.load_checkpoint(prefix)
    if OBJECT_GRAPH in reader.get_variable_to_shape_map():
        names = _ObjectNames(reader)
    else:
        names = _TF1Names(reader)
    config, units = _architecture(names, path)
    encoder = ResNet(**config, name="simclr_resnet")
    assign(encoder, _values(names, units), f"SimCLR checkpoint {path}")

    head = _projection_head(names, path)
    classifier = _classifier(names, path)
    if classifier is not None:
        if head is None and ft_layer:
            raise ValueError(
                f"`ft_layer` must be 0 for {path}, which has no projection "
                f"head. Received: ft_layer={ft_layer}"
            )
    return PretrainedModel(
        encoder,
        head=head,
        classifier=classifier,
        ft_layer=ft_layer if classifier is not None else 0,
        name="simclr",
    )


def save_simclr(model, directory, step=0):
    """Writes a SimCLR network as a TF1 checkpoint of google-research/simclr.

    The inverse of `load_simclr` for the TF1 layout: the variables get the
    names and shapes that SimCLR's TF1 code gives them
    (`base_model/conv2d_17/kernel`, `head_contrastive/nl_0/dense/kernel`,
    `head_supervised/linear_layer/dense/kernel`), so the reference code and
    `load_simclr` read the file back into the same network. Only networks
    that SimCLR's code builds can be written: a `backbones.ResNet` with
    SimCLR's layout (`shortcut_pool="all"`, symmetric conv and "same" pool
    padding, no input normalisation, ResNet-D without SK only from
    ResNet-50), a `ProjectionHead` or none, a `Dense` classifier or none.

    Args:
        model: `keras_ssl.pretrained.PretrainedModel`, e.g. from
            `load_simclr`.
        directory: str. Created if needed; receives `model.ckpt-{step}`
            and the `checkpoint` file that `tf.train.latest_checkpoint`
            reads.
        step: int. The checkpoint's step number. Defaults to `0`.

    Returns:
        The checkpoint prefix, `directory/model.ckpt-{step}`.

    Example:

    ```python
    model = keras_ssl.pretrained.load_simclr("r50_1x_sk0/saved_model")
    keras_ssl.pretrained.save_simclr(model, "r50_1x_sk0_tf1")
    ```
    """
    values = _encoder_values(model.encoder)
    if model.head is not None:
        values.update(_head_values(model.head))
    if model.classifier is not None:
        values.update(_classifier_values(model.classifier))
    return _write_tf1_checkpoint(values, directory, step)


def _encoder_values(encoder):
    """The encoder's variables under SimCLR's TF1 names."""
    weights = {relative_path(encoder, v): v for v in encoder.weights}
    values = {}
    for kind, target, name in _tf1_names(_simclr_units(encoder)):
        variables = ("kernel",) if kind == "conv" else BN_VARIABLES
        for variable in variables:
            values[f"{name}/{variable}"] = weights.pop(f"{target}/{variable}")
    if weights:
        raise ValueError(
            f"`{encoder.name}` has variables that SimCLR's ResNet does not: "
            f"{sorted(weights)[:8]}."
        )
    return values


def _head_values(head):
    """The projection head's variables under SimCLR's TF1 names."""
    if not isinstance(head, ProjectionHead):
        raise ValueError(
            "SimCLR's projection head is a `ProjectionHead`. Received: "
            f"head={head!r}"
        )
    weights = {relative_path(head, v): v for v in head.weights}
    values = {}
    for j in range(head.num_layers):
        scope = f"head_contrastive/nl_{j}"
        values[f"{scope}/dense/kernel"] = weights.pop(f"dense_{j}/kernel")
        for variable in BN_VARIABLES:
            value = weights.pop(f"bn_{j}/{variable}", None)
            if value is not None:
                values[f"{scope}/batch_normalization/{variable}"] = value
    if weights:
        raise ValueError(
            "The projection head has variables that SimCLR's does not: "
            f"{sorted(weights)[:8]}."
        )
    return values


def _classifier_values(classifier):
    """The supervised head's variables under SimCLR's TF1 names."""
    if not isinstance(classifier, keras.layers.Dense):
        raise ValueError(
            "SimCLR's supervised head is one `Dense` layer. Received: "
            f"classifier={classifier!r}"
        )
    scope = "head_supervised/linear_layer/dense"
    values = {f"{scope}/kernel": classifier.kernel}
    if classifier.use_bias:
        values[f"{scope}/bias"] = classifier.bias
    return values


def _write_tf1_checkpoint(values, directory, step):
    """Writes `values` (TF1 name -> variable) as `model.ckpt-{step}`."""
    # TensorFlow is an optional dependency: imported where it is needed.
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(os.fspath(directory), f"model.ckpt-{step}")
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[
            tf.constant(keras.ops.convert_to_numpy(values[n])) for n in names
        ],
    )
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        f.write(f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')
    return prefix


def _simclr_units(encoder):
    """The SimCLR units of a `ResNet`, or an error naming what differs."""
    if not isinstance(encoder, ResNet):
        raise ValueError(
            "SimCLR's encoder is a `keras_ssl.backbones.ResNet`. Received: "
            f"encoder={encoder!r}"
        )
    config = encoder.get_config()
    simclr = {
        "shortcut_pool": "all",
        "conv_padding": "symmetric",
        "pool_padding": "same",
        "input_mean": None,
        "input_std": None,
        "bn_epsilon": 1e-5,
    }
    differs = {
        key: config.get(key)
        for key, value in simclr.items()
        if config.get(key) != value
    }
    depth, sk = config["depth"], config["sk_ratio"] > 0
    resnet_d = sk if config["resnet_d"] is None else config["resnet_d"]
    if sk and not resnet_d:
        differs["resnet_d"] = False
    if resnet_d and depth < 50:
        differs["resnet_d"] = f"True with depth={depth}"
    if differs:
        raise ValueError(
            "The encoder is not a network SimCLR's TF1 code builds: "
            f"it needs {simclr} (and ResNet-D for SK, only from ResNet-50). "
            f"Received: {differs}"
        )
    return list(_units(depth, config["stem"], sk, resnet_d))


def checkpoint_prefix(path):
    """The TF checkpoint prefix of a SavedModel, directory or prefix."""
    # TensorFlow is an optional dependency: imported where it is needed.
    import tensorflow as tf

    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return os.path.join(path, "variables", "variables")
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        for root, _, files in sorted(os.walk(path)):
            if "saved_model.pb" in files:
                return os.path.join(root, "variables", "variables")
            index = sorted(f for f in files if f.endswith(".index"))
            if index:
                return os.path.join(root, index[0][: -len(".index")])
        raise ValueError(
            f"`path` holds no SavedModel or TF checkpoint. Received: "
            f"path={path!r}"
        )
    return re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)


class _TF1Names:
    """Variables of a TF1 checkpoint, named by TF1's layer counters."""

    def __init__(self, reader):
        self.reader = reader
        self.keys = set(reader.get_variable_to_shape_map())

    def backbone_kernels(self):
        pattern = re.compile(r"base_model/conv2d(_\d+)?/kernel")
        return sum(1 for key in self.keys if pattern.fullmatch(key))

    def names(self, units):
        return _tf1_names(units)

    def get(self, name):
        return self.reader.get_tensor(name) if name in self.keys else None

    def head_layer(self, j):
        for mode in ("nl", "l"):
            scope = f"head_contrastive/{mode}_{j}"
            if f"{scope}/dense/kernel" in self.keys:
                return f"{scope}/dense", f"{scope}/batch_normalization"
        return None

    def classifier(self):
        return "head_supervised/linear_layer/dense"


def _tf1_names(units):
    """`(kind, keras_ssl name, TF1 scope)` of each unit, by TF1's counters."""
    counters = {"conv": 0, "bn": 0}
    for kind, target, _ in units:
        layer = "conv2d" if kind == "conv" else "batch_normalization"
        index = counters[kind]
        counters[kind] += 1
        suffix = f"_{index}" if index else ""
        yield kind, target, f"base_model/{layer}{suffix}"


class _ObjectNames:
    """Variables of a TF2 checkpoint or SavedModel, by object-tree path.

    A variable is saved once, under the first path the saver found to it;
    a SavedModel of SimCLR's export module finds the trainable ones through
    its `trainable_variables_list` first. The checkpoint's object graph
    lists every path, so each variable is looked up by the path through
    the model.
    """

    def __init__(self, reader):
        # TensorFlow is an optional dependency: imported where it is needed.
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH))
        self.reader = reader
        self.paths = _variable_paths(graph)
        # The prefix up to the model: `model/` in a checkpoint, `model/`
        # under the export module in a SavedModel.
        self.root = ""
        for path in sorted(self.paths, key=len):
            if "resnet_model/" in path:
                self.root = path[: path.index("resnet_model/")]
                break

    def backbone_kernels(self):
        start = self.root + "resnet_model/"
        return sum(
            1
            for path in self.paths
            if path.startswith(start) and path.endswith("/kernel")
        )

    def names(self, units):
        for kind, target, path in units:
            yield kind, target, path

    def get(self, name):
        key = self.paths.get(self.root + name)
        return None if key is None else self.reader.get_tensor(key)

    def head_layer(self, j):
        scope = f"_projection_head/linear_layers/{j}"
        if self.root + f"{scope}/dense/kernel" in self.paths:
            return f"{scope}/dense", f"{scope}/bn_relu/bn"
        return None

    def classifier(self):
        return "supervised_head/linear_layer/dense"


def _variable_paths(graph, max_visits=4):
    """Maps every object-tree path of a variable to its checkpoint key."""
    paths = {}
    visits = [0] * len(graph.nodes)
    stack = [(0, "")]
    while stack:
        node_id, path = stack.pop()
        visits[node_id] += 1
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                paths[path] = attribute.checkpoint_key
        for child in node.children:
            # Shared objects are reached along several paths; a few visits
            # per object find the path through the model in SimCLR's trees.
            if visits[child.node_id] < max_visits:
                name = (
                    f"{path}/{child.local_name}" if path else child.local_name
                )
                stack.append((child.node_id, name))
    return paths


def _units(depth, stem, sk, resnet_d):
    """SimCLR's conv and BN layers, in the order TF1 created them.

    Yields `(kind, keras_ssl name, TF2 path)`. TF2 paths index the layer
    lists of SimCLR's `tf2/resnet.py`, where padding, pooling, identity and
    DropBlock layers take list slots too.
    """
    stem_path = "resnet_model/initial_conv_relu_max_pool"
    if stem == "imagenet" and resnet_d:
        for i, (conv, bn) in enumerate(((0, 1), (2, 3), (4, 6))):
            yield "conv", f"stem_conv{i + 1}", f"{stem_path}/{conv}/conv2d"
            yield "bn", f"stem_bn{i + 1}", f"{stem_path}/{bn}/bn"
    else:
        yield "conv", "stem_conv1", f"{stem_path}/0/conv2d"
        yield "bn", "stem_bn1", f"{stem_path}/2/bn"
    bottleneck = depth >= 50
    for group, blocks in enumerate(STAGE_BLOCKS[depth]):
        for block in range(blocks):
            name = f"stage{group + 1}_block{block + 1}"
            path = f"resnet_model/block_groups/{group}/layers/{block}"
            if block == 0:
                strides = 2 if group else 1
                shortcut = (
                    "projection_layers" if bottleneck else "shortcut_layers"
                )
                shortcut = f"{path}/{shortcut}"
                # ResNet-D: [pad,] pool, conv, BN; else conv, BN.
                conv = (2 if strides > 1 else 1) if resnet_d else 0
                yield (
                    "conv",
                    f"{name}_shortcut_conv",
                    f"{shortcut}/{conv}/conv2d",
                )
                yield "bn", f"{name}_shortcut_bn", f"{shortcut}/{conv + 1}/bn"
            if bottleneck:
                yield from _bottleneck_units(name, path, sk)
            else:
                main = f"{path}/conv2d_bn_layers"
                yield "conv", f"{name}_conv1", f"{main}/0/conv2d"
                yield "bn", f"{name}_bn1", f"{main}/1/bn"
                yield "conv", f"{name}_conv2", f"{main}/2/conv2d"
                yield "bn", f"{name}_bn2", f"{main}/3/bn"


def _bottleneck_units(name, path, sk):
    main = f"{path}/conv_relu_dropblock_layers"
    yield "conv", f"{name}_conv1", f"{main}/0/conv2d"
    yield "bn", f"{name}_bn1", f"{main}/1/bn"
    # Slot 2 is a DropBlock; the SK conv is one layer, a plain one two.
    if sk:
        yield "conv", f"{name}_conv2", f"{main}/3/conv2d_fixed_padding/conv2d"
        yield "bn", f"{name}_bn2", f"{main}/3/batch_norm_relu/bn"
        yield "conv", f"{name}_sk2/reduce_conv", f"{main}/3/conv2d_0"
        yield "bn", f"{name}_sk2/reduce_bn", f"{main}/3/batch_norm_relu_1/bn"
        yield "conv", f"{name}_sk2/expand_conv", f"{main}/3/conv2d_1"
        last = 5
    else:
        yield "conv", f"{name}_conv2", f"{main}/3/conv2d"
        yield "bn", f"{name}_bn2", f"{main}/4/bn"
        last = 6
    yield "conv", f"{name}_conv3", f"{main}/{last}/conv2d"
    yield "bn", f"{name}_bn3", f"{main}/{last + 1}/bn"


def _candidates():
    for depth in STAGE_BLOCKS:
        for stem in ("imagenet", "cifar"):
            for sk, resnet_d in ((False, False), (False, True), (True, True)):
                if sk and depth < 50:
                    continue  # SimCLR's basic blocks never use SK.
                yield depth, stem, sk, resnet_d


def _architecture(names, path):
    """The `ResNet` arguments and named units that fit the checkpoint."""
    kernels = names.backbone_kernels()
    for depth, stem, sk, resnet_d in _candidates():
        units = list(names.names(_units(depth, stem, sk, resnet_d)))
        convs = [unit for unit in units if unit[0] == "conv"]
        if len(convs) != kernels:
            continue
        if any(names.get(f"{n}/kernel") is None for _, _, n in convs):
            continue
        first = names.get(f"{convs[0][2]}/kernel").shape
        deep_stem = stem == "imagenet" and resnet_d
        if first[0] != (3 if stem == "cifar" or deep_stem else 7):
            continue
        if isinstance(names, _TF1Names) and resnet_d and depth < 50:
            # TF1's basic block feeds ResNet-D's pooled input to its main
            # branch too, a network no published checkpoint uses.
            raise ValueError(
                f"{path} is a TF1 ResNet-{depth} with ResNet-D, which "
                "keras_ssl does not build."
            )
        width = first[-1] / (32 if deep_stem else 64)
        config = {
            "depth": depth,
            "width_multiplier": width,
            "sk_ratio": _sk_ratio(names, units) if sk else 0.0,
            "stem": stem,
            "resnet_d": resnet_d,
            "shortcut_pool": "all",
        }
        return config, units
    raise ValueError(
        f"{path} does not hold a SimCLR ResNet: its {kernels} backbone "
        "kernels match no depth, stem and SK setting."
    )


def _sk_ratio(names, units):
    mids = []
    for _, target, name in units:
        if target.endswith("/reduce_conv"):
            _, _, filters, mid = names.get(f"{name}/kernel").shape
            mids.append((filters, mid))
    ratios = [DEFAULT_SK_RATIO] + [m / f for f, m in mids if m > 32]
    for ratio in ratios:
        if all(max(int(f * ratio), 32) == m for f, m in mids):
            return ratio
    raise ValueError(f"No SK ratio gives the descriptor widths {mids}.")


def _values(names, units):
    values = {}
    for kind, target, name in units:
        if kind == "conv":
            values[f"{target}/kernel"] = names.get(f"{name}/kernel")
            continue
        for variable in BN_VARIABLES:
            value = names.get(f"{name}/{variable}")
            if value is None:
                raise ValueError(f"The checkpoint has no `{name}/{variable}`.")
            values[f"{target}/{variable}"] = value
    return values


def _projection_head(names, path):
    layers = []
    while (layer := names.head_layer(len(layers))) is not None:
        layers.append(layer)
    if not layers:
        return None
    kernels = [names.get(f"{dense}/kernel") for dense, _ in layers]
    head = ProjectionHead(
        num_layers=len(layers),
        output_dim=int(kernels[-1].shape[1]),
        hidden_dim=int(kernels[0].shape[1]) if len(layers) > 1 else None,
        name="projection_head",
    )
    head.build((None, kernels[0].shape[0]))
    values = {}
    for j, ((_, bn), kernel) in enumerate(zip(layers, kernels)):
        values[f"dense_{j}/kernel"] = kernel
        variables = BN_VARIABLES
        if j == len(layers) - 1:
            # SimCLR's last head layer has neither bias nor BN centring.
            variables = ("gamma", "moving_mean", "moving_variance")
        for variable in variables:
            values[f"bn_{j}/{variable}"] = names.get(f"{bn}/{variable}")
    assign(head, values, f"SimCLR projection head of {path}")
    return head


def _classifier(names, path):
    scope = names.classifier()
    kernel = names.get(f"{scope}/kernel")
    if kernel is None:
        return None
    classifier = keras.layers.Dense(kernel.shape[1], name="classifier")
    classifier.build((None, kernel.shape[0]))
    bias = names.get(f"{scope}/bias")
    if bias is None:
        bias = np.zeros(kernel.shape[1], kernel.dtype)
    assign(
        classifier,
        {"kernel": kernel, "bias": bias},
        f"SimCLR supervised head of {path}",
    )
    return classifier
