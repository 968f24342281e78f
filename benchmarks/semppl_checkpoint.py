"""SemPPL checkpoints written by SemPPL's own code, read by keras_ssl.

The reference is google-deepmind/semppl, imported from a checkout the
user points to (nothing of it is copied here), run in an environment with
JAX, Haiku, optax and dill:

    git clone https://github.com/google-deepmind/semppl /path/to/semppl
    PYTHONPATH=. python benchmarks/semppl_checkpoint.py \\
        --semppl-dir /path/to/semppl --reference-python /path/to/jax/python

The reference worker (`--reference-python`, no TensorFlow needed) builds
the networks with the checkout's own Haiku code and writes two files:

- `pretrain.pkl`, the file SemPPL's `eval_experiment.py` reads as
  `checkpoint_to_evaluate`: `{"experiment_state": {"online_params",
  "online_state", "target_params", "target_state"}, "step", "rng"}`
  dumped with dill (protocol 2), every leaf a JAX array with the leading
  device axis of a `jax.pmap`ped state (`eval_experiment.py` takes
  `helpers.get_first` of it). SemPPL does not release its pretraining
  code; its online network is built here as BYOL's `_forward` builds it
  (SemPPL's code is BYOL's): `networks.ResNet50`, `networks.MLP` named
  `projector` and `predictor`, and `hk.Linear` named `classifier`, under
  one `hk.transform_with_state`. Parameters are Haiku's initialisation,
  BatchNorm scale and offset randomised, BatchNorm statistics those of one
  training-mode pass over the images.
- `linear-eval.pkl`, written by the checkout's `EvalExperiment` through
  its `Checkpointer` after one linear-evaluation step: it loads
  `pretrain.pkl` itself (so the reference reads the layout above), runs
  `update_pmap` once, and saves `_EvalExperimentState` (first device's
  copy, NumPy leaves, optax states) with a JAX `rng`.

The worker also records the reference's inference-mode outputs
(`is_training=False`) on the same random images: the online network's
embedding, projection, prediction and logits, the target network's
embedding, and the linear-eval backbone's embedding and classifier
logits. This process then loads both files with
`keras_ssl.pretrained.load_semppl` (no JAX, Haiku or dill) and prints the
max relative difference, max |ours - theirs| / max |theirs|, per output.

Shims for API drift since the reference's pinned JAX 0.3.25 (installed
here only in the worker, never in the checkout): `jax.tree_map`,
`jax.tree_multimap`, `jax.host_id` and `jax.device_put_sharded` where
missing; empty `tensorflow`, `tensorflow_datasets` and `acme` modules
(the data pipeline and the prefetcher are not used: the worker feeds its
own batch); the checkout is imported as the package `semppl` (through a
symlink in a temporary directory if it is named otherwise).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

OUTPUTS = {
    "pretrain.pkl": (
        ("online", "features", "online_features"),
        ("online", "projection", "online_projection"),
        ("online", "prediction", "online_prediction"),
        ("online", "logits", "online_logits"),
        ("target", "features", "target_features"),
    ),
    "linear-eval.pkl": (
        ("backbone", "features", "eval_features"),
        ("backbone", "logits", "eval_logits"),
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--semppl-dir", help="a google-deepmind/semppl checkout"
    )
    parser.add_argument(
        "--reference-python",
        default=sys.executable,
        help="interpreter with JAX, Haiku, optax and dill for the reference",
    )
    parser.add_argument("--depth", type=int, default=50, choices=(18, 50))
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--stats-batch",
        type=int,
        default=16,
        help="images of the BatchNorm statistics' pass (0: the evaluated)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--directory",
        help="where the worker writes (kept; a temporary one by default)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="compare the files already in `--directory`",
    )
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args(argv)
    if not args.semppl_dir or not os.path.isdir(args.semppl_dir):
        raise ValueError(
            "`--semppl-dir` must name a google-deepmind/semppl checkout. "
            f"Received: {args.semppl_dir!r}"
        )
    if (
        args.width < 1
        or args.devices < 1
        or args.batch % args.devices
        or args.stats_batch < 0
    ):
        raise ValueError(
            "`--width` and `--devices` must be >= 1, `--batch` a multiple "
            f"of `--devices` and `--stats-batch` >= 0. Received: "
            f"width={args.width}, devices={args.devices}, "
            f"batch={args.batch}, stats_batch={args.stats_batch}"
        )
    return args


# ----------------------------------------------------------------------
# Reference worker (JAX, Haiku, dill; no keras_ssl, no TensorFlow).


def _import_reference(semppl_dir, devices):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree_util.tree_map
    if not hasattr(jax, "tree_multimap"):
        jax.tree_multimap = jax.tree_util.tree_map
    if not hasattr(jax, "host_id"):
        jax.host_id = jax.process_index
    if not hasattr(jax, "device_put_sharded"):

        def device_put_sharded(shards, devices):
            mesh = jax.sharding.Mesh(np.array(devices), ("i",))
            spec = jax.sharding.PartitionSpec("i")
            sharding = jax.sharding.NamedSharding(mesh, spec)
            return jax.device_put(np.stack(shards), sharding)

        jax.device_put_sharded = device_put_sharded

    class _Anything(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Anything(f"{self.__name__}.{name}")

    for name in (
        "tensorflow",
        "tensorflow.compat",
        "tensorflow.compat.v2",
        "tensorflow_datasets",
        "acme",
        "acme.jax",
        "acme.jax.utils",
    ):
        sys.modules[name] = _Anything(name)
    sys.modules["acme.jax.utils"].prefetch = iter
    sys.modules["acme"].jax = sys.modules["acme.jax"]
    sys.modules["acme.jax"].utils = sys.modules["acme.jax.utils"]
    sys.modules["tensorflow"].compat = sys.modules["tensorflow.compat"]
    sys.modules["tensorflow.compat"].v2 = sys.modules["tensorflow.compat.v2"]

    semppl_dir = os.path.abspath(semppl_dir)
    parent = os.path.dirname(semppl_dir)
    if os.path.basename(semppl_dir) != "semppl":
        parent = tempfile.mkdtemp()
        os.symlink(semppl_dir, os.path.join(parent, "semppl"))
    sys.path.insert(0, parent)
    from semppl import eval_experiment
    from semppl.utils import dataset
    from semppl.utils import networks

    return eval_experiment, dataset, networks


def worker(args):
    eval_experiment, dataset, networks = _import_reference(
        args.semppl_dir, args.devices
    )
    import dill
    import haiku as hk
    import jax
    import numpy as np

    devices = jax.local_devices()
    assert len(devices) == args.devices, devices
    encoder_class = f"ResNet{args.depth}"
    num_classes = 10
    rng = np.random.default_rng(args.seed)
    images = rng.uniform(
        size=(args.batch, args.image_size, args.image_size, 3)
    ).astype("float32")
    # A larger batch for the BatchNorm statistics (one training-mode pass).
    # `--stats-batch 0`: the evaluated images themselves.
    stats_images = rng.uniform(
        size=(args.stats_batch, args.image_size, args.image_size, 3)
    ).astype("float32")
    if not args.stats_batch:
        stats_images = images

    # BYOL's pretraining `bn_config`.
    bn_config = {
        "decay_rate": 0.9,
        "eps": 1e-5,
        "create_scale": True,
        "create_offset": True,
    }

    def forward(images, is_training):
        # BYOL's `_forward` (SemPPL's pretraining code is BYOL's): the
        # checkout's encoder and MLPs, and the online classifier.
        net = getattr(networks, encoder_class)(
            None, bn_config=bn_config, width_multiplier=args.width
        )
        projector = networks.MLP(
            name="projector",
            hidden_size=64,
            output_size=32,
            bn_config=bn_config,
        )
        predictor = networks.MLP(
            name="predictor",
            hidden_size=64,
            output_size=32,
            bn_config=bn_config,
        )
        classifier = hk.Linear(output_size=num_classes, name="classifier")
        embedding = net(dataset.normalize_images(images), is_training)
        projection = projector(embedding, is_training)
        return {
            "features": embedding,
            "projection": projection,
            "prediction": predictor(projection, is_training),
            "logits": classifier(jax.lax.stop_gradient(embedding)),
        }

    network = hk.without_apply_rng(hk.transform_with_state(forward))

    def make(seed):
        params, state = network.init(jax.random.PRNGKey(seed), images, True)
        noise = np.random.default_rng(seed + 100)

        def perturb(path, value):
            name = jax.tree_util.keystr(path)
            if "scale" in name or "offset" in name:
                return value + noise.normal(scale=0.2, size=value.shape)
            if "'b'" in name:
                return value + noise.normal(scale=0.1, size=value.shape)
            return value

        params = jax.tree_util.tree_map_with_path(perturb, params)
        params = jax.tree_util.tree_map(lambda v: v.astype("float32"), params)
        # BatchNorm statistics of one training-mode pass.
        _, state = network.apply(params, state, stats_images, True)
        return params, state

    online_params, online_state = make(args.seed + 1)
    target_params, target_state = make(args.seed + 2)
    expected = {}

    def pretraining_outputs(suffix="", dtype="float32"):
        for prefix, (params, state) in (
            ("online", (online_params, online_state)),
            ("target", (target_params, target_state)),
        ):
            outputs, _ = network.apply(
                _cast(params, dtype),
                _cast(state, dtype),
                _cast(images, dtype),
                False,
            )
            for key, value in outputs.items():
                expected[f"{prefix}_{key}{suffix}"] = np.asarray(value)

    pretraining_outputs()

    def replicate(tree):
        return jax.pmap(lambda t: t)(
            jax.tree_util.tree_map(
                lambda v: np.broadcast_to(v, (len(devices),) + v.shape),
                tree,
            )
        )

    state = {
        "online_params": replicate(online_params),
        "online_state": replicate(online_state),
        "target_params": replicate(target_params),
        "target_state": replicate(target_state),
    }
    leaf = jax.tree_util.tree_leaves(state)[0]
    print(
        f"pretrain.pkl leaves: {type(leaf).__module__}.{type(leaf).__name__} "
        f"{leaf.shape} (device axis {len(devices)})",
        flush=True,
    )
    pretrain = os.path.join(args.directory, "pretrain.pkl")
    with open(pretrain, "wb") as f:
        dill.dump(
            {
                "experiment_state": state,
                "step": 10,
                "rng": jax.random.PRNGKey(3),
            },
            f,
            protocol=2,
        )

    # Linear evaluation with the checkout's experiment and Checkpointer.
    experiment = eval_experiment.EvalExperiment(
        random_seed=args.seed,
        num_classes=num_classes,
        batch_size=args.batch,
        max_steps=1,
        enable_double_transpose=False,
        checkpoint_to_evaluate=pretrain,
        allow_train_from_scratch=False,
        freeze_backbone=True,
        network_config=dict(
            encoder_class=encoder_class,
            encoder_config=dict(resnet_v2=False, width_multiplier=args.width),
            bn_decay_rate=0.9,
        ),
        optimizer_config=dict(momentum=0.9, nesterov=True),
        lr_schedule_config=dict(base_learning_rate=0.3, warmup_steps=0),
        evaluation_config=dict(subset="test", batch_size=args.batch),
        checkpointing_config=dict(
            use_checkpointing=True,
            checkpoint_dir=args.directory,
            save_checkpoint_interval=1,
            filename="linear-eval.pkl",
        ),
    )
    per_device = args.batch // len(devices)
    labels = rng.integers(0, num_classes, size=args.batch).astype("int64")

    def batches():
        while True:
            yield {
                "images": images.reshape(
                    (len(devices), per_device) + images.shape[1:]
                ),
                "labels": labels.reshape(len(devices), per_device),
            }

    experiment._build_train_input = batches
    step_rngs = jax.random.split(jax.random.PRNGKey(4), len(devices))
    experiment.step(global_step=np.zeros(len(devices), "int32"), rng=step_rngs)
    experiment.save_checkpoint(1, jax.random.PRNGKey(5))
    first = jax.tree_util.tree_map(lambda x: x[0], experiment._experiment_state)

    def eval_outputs(suffix="", dtype="float32"):
        embedding, _ = experiment.forward_backbone.apply(
            _cast(first.backbone_params, dtype),
            _cast(first.backbone_state, dtype),
            {"images": _cast(images, dtype)},
            is_training=False,
        )
        logits = experiment.forward_classif.apply(
            _cast(first.classif_params, dtype), embedding
        )
        expected[f"eval_features{suffix}"] = np.asarray(embedding)
        expected[f"eval_logits{suffix}"] = np.asarray(logits)

    eval_outputs()
    # The same networks in float64: how far float32 itself is from exact.
    jax.config.update("jax_enable_x64", True)

    pretraining_outputs("_float64", "float64")
    eval_outputs("_float64", "float64")
    np.savez(
        os.path.join(args.directory, "reference.npz"), images=images, **expected
    )
    # Haiku's names, as written: the encoder's modules and the heads.
    for name in ("online_params", "online_state"):
        modules = sorted(state[name])
        heads = [m for m in modules if not m.startswith("res_net")]
        encoder = [m for m in modules if m not in heads]
        print(
            f"pretrain.pkl {name}: {len(modules)} modules, e.g. "
            f"{encoder[1]}; heads: {', '.join(heads)}",
            flush=True,
        )
    saved = experiment._experiment_state
    print(
        f"linear-eval.pkl experiment_state: {type(saved).__name__}"
        f"{saved._fields}; classif_params: {sorted(saved.classif_params)}",
        flush=True,
    )


def _cast(tree, dtype):
    """Floating-point leaves of a tree as NumPy arrays of `dtype`."""
    import jax

    return jax.tree_util.tree_map(
        lambda v: (
            np.asarray(v, dtype)
            if np.issubdtype(np.asarray(v).dtype, np.floating)
            else v
        ),
        tree,
    )


# ----------------------------------------------------------------------
# keras_ssl side.


def _relative(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return np.abs(a - b).max() / np.abs(b).max()


def compare(args, directory):
    import time

    from keras_ssl.pretrained import load_semppl

    reference = dict(np.load(os.path.join(directory, "reference.npz")))
    images = reference.pop("images")
    print(
        f"ResNet-{args.depth} {args.width}x, {args.devices} devices, "
        f"{images.shape[0]} images of {images.shape[1]}x{images.shape[2]} "
        "(max |a - b| / max |b|; float64: the reference network run in "
        "float64 on the same parameters)"
    )
    print(
        "| file | network | output | ours vs reference | reference vs "
        "float64 | ours vs float64 |"
    )
    print("|---|---|---|---|---|---|")
    for filename, outputs in OUTPUTS.items():
        path = os.path.join(directory, filename)
        models = {}
        for network, output, key in outputs:
            if network not in models:
                start = time.perf_counter()
                models[network] = load_semppl(
                    path,
                    network="online" if network == "backbone" else network,
                )
                print(
                    f"{filename} ({os.path.getsize(path) / 2**20:.0f} MiB), "
                    f"{network}: read in {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            ours = models[network](images, training=False)[output]
            theirs, exact = reference[key], reference[f"{key}_float64"]
            print(
                f"| {filename} | {network} | {output} | "
                f"{_relative(ours, theirs):.1e} | "
                f"{_relative(theirs, exact):.1e} | "
                f"{_relative(ours, exact):.1e} |",
                flush=True,
            )


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with tempfile.TemporaryDirectory() as temporary:
        directory = args.directory or temporary
        command = [
            args.reference_python,
            os.path.abspath(__file__),
            "--worker",
            "--directory",
            directory,
        ] + [
            a
            for k in (
                "semppl_dir",
                "depth",
                "width",
                "devices",
                "image_size",
                "batch",
                "stats_batch",
                "seed",
            )
            for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))
        ]
        if not args.reuse:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            subprocess.run(command, check=True, env=env)
        compare(args, directory)


if __name__ == "__main__":
    main()
