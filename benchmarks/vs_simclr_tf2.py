"""keras-ssl's SimCLRv2 step against SimCLR's own TF2 step, in alternation.

The reference is google-research/simclr's `tf2/` code, imported from a
checkout the user points to (nothing of it is copied here):

    git clone https://github.com/google-research/simclr /path/to/simclr
    pip install --target /path/to/tf_keras_site --no-deps tf-keras==2.21.0
    PYTHONPATH=.:/path/to/tf_keras_site python benchmarks/vs_simclr_tf2.py \\
        --simclr-dir /path/to/simclr

(or `--reference-python` naming the interpreter of a separate environment
that has TensorFlow and `tf-keras`). The reference is Keras 2 code: it runs
in its own worker process with `TF_USE_LEGACY_KERAS=1`, so that
`tf.keras` is `tf_keras` there, while keras-ssl runs on Keras 3 in
another. Each worker builds its contenders and the same fixed random batch
(NumPy, one seed), then the parent drives the workers over pipes, one step
at a time, in alternation (reference, ours, reference, ours, ...; one
untimed warm-up step each first). Each worker times its own step: wall
time with `time.perf_counter`, CPU time with `time.process_time` (the
worker's time over all its threads). The parent reports medians and
ranges, and per-cycle ratios, as `benchmarks/alternate.py` does.

The step on both sides: CIFAR-stem ResNet-18 (`--width` 1), the 3-layer
projection head with 128 outputs, NT-Xent at temperature 0.5 over the
2·B views, LARS (momentum 0.9, eeta 0.001, weight decay 1e-4, BatchNorm
parameters and biases excluded from decay and adaptation) at a constant
learning rate of 1.0·B/256: the settings of the reference's CIFAR-10
command in its README, without the warm-up/cosine schedule. Float32,
no memory, no linear-eval head (`--lineareval_while_pretraining=False`
on the reference; no probe on ours). The reference's step is its
`run.py` `single_step` (forward, contrastive loss with its metrics,
weight-decay term, gradient, LARS update) under `MirroredStrategy`, as
`run.py` runs it without a TPU, in one `tf.function` per step. The
losses printed differ by 2x by definition: SimCLR's is the sum of the two
directions' cross-entropies, ours their mean.

Augmentation is excluded on both sides: SimCLR makes its views in its
`tf.data` pipeline, outside the step, and feeds them as (B, 32, 32, 6)
(two views stacked on channels; `--use_blur=False` for CIFAR). Both sides
get that same float32 batch; ours splits it into the two views in place
of its `Views` layer. The contender `ours_views` is keras-ssl's step as
shipped, making its views inside the step (compiled on their own) from
the first view's images as uint8: augmentation included on our side only.

Contenders (`--contenders`, comma-separated):

- `reference`: SimCLR TF2 with its default `--global_bn=True`: every
  BatchNorm is Keras 2's `SyncBatchNormalization` (unfused).
- `reference_local_bn`: SimCLR TF2 with `--global_bn=False`: Keras 2's
  `BatchNormalization(fused=False)`, the reference's non-synchronised
  choice and the fairest match for one replica.
- `ours`: keras-ssl `SimCLRv2Pretrainer`, float32 (`FusedBatchNormalization`
  as every ResNet and head builds it).
- `ours_bf16`: `ours` under Keras's `mixed_bfloat16` policy. The
  reference's TF2 code has no precision option: its best is float32.
- `ours_views`: `ours` with its views made in the step (see above).
- `convolutions`: a floor, not a step: only the convolutions the float32
  step must run (each of the encoder's convolutions over the 2·B views:
  forward, gradient of the kernel, and gradient of the input except the
  stem's), on random tensors of the layers' shapes, in one `tf.function`
  with nothing else. `reference / convolutions` is the most any
  implementation built on TensorFlow's convolution kernels could gain
  over the reference on this machine.

`--profile` also traces 2 steps of each contender after the timed cycles
and prints its self time by op type (`benchmarks/op_profile.py`).

Prints the command, the machine, a markdown table and the speed-ups
(reference time / our time, per cycle) against the target of 1.25, and
each contender's convolution throughput: the step's convolution FLOPs
(`convolution_flops`, the same network on both sides) over its median
wall time, next to the rate 1.25x the reference's would take.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import machine  # noqa: E402
from alternate import report  # noqa: E402
from alternate import summary  # noqa: E402

REFERENCE = ("reference", "reference_local_bn")
OURS = ("ours", "ours_bf16", "ours_views", "convolutions")
REFERENCE_FILES = ("model.py", "resnet.py", "lars_optimizer.py", "objective.py")
TARGET = 1.25


def check_simclr_dir(path, files=REFERENCE_FILES):
    """The `tf2` directory of a google-research/simclr checkout at `path`.

    Raises:
        ValueError: if `path` is not given or lacks one of the reference's
            `tf2/` `files` the benchmark imports.
    """
    if not path:
        raise ValueError(
            "`--simclr-dir` must name a checkout of google-research/simclr "
            "(the directory holding `tf2/`)."
        )
    tf2 = os.path.join(os.path.abspath(path), "tf2")
    missing = [
        name for name in files if not os.path.isfile(os.path.join(tf2, name))
    ]
    if missing:
        raise ValueError(
            f"`--simclr-dir` must hold SimCLR's TF2 code, but {tf2} lacks "
            f"{', '.join(missing)}. Received: simclr_dir={path!r}"
        )
    return tf2


def add_reference_arguments(parser, python=True):
    """`--simclr-dir` and, with `python`, `--reference-python`: where the
    reference's code is and the interpreter that runs it."""
    parser.add_argument(
        "--simclr-dir", help="a google-research/simclr checkout"
    )
    if python:
        parser.add_argument(
            "--reference-python",
            default=sys.executable,
            help="interpreter with TensorFlow and tf-keras for the reference",
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_reference_arguments(parser, python=False)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed cycles (steps each)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--contenders",
        default="reference,ours,reference_local_bn,ours_bf16,ours_views",
    )
    parser.add_argument(
        "--reference-python",
        default=sys.executable,
        help="interpreter with TensorFlow and tf-keras for the reference",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print each contender's time by op type (2 traced steps)",
    )
    parser.add_argument("--worker", choices=("ours", "reference"))
    args = parser.parse_args(argv)
    if args.batch < 2 or args.width < 1 or args.steps < 1 or args.warmup < 0:
        raise ValueError(
            "`--batch` must be >= 2, `--width` and `--steps` >= 1, "
            f"`--warmup` >= 0. Received: batch={args.batch}, "
            f"width={args.width}, steps={args.steps}, warmup={args.warmup}"
        )
    names = args.contenders.split(",")
    unknown = [n for n in names if n not in REFERENCE + OURS]
    if unknown or not names:
        raise ValueError(
            f"Unknown contenders {unknown}; choose among "
            f"{', '.join(REFERENCE + OURS)}."
        )
    args.contenders = names
    if args.worker != "ours" and any(n in REFERENCE for n in names):
        args.simclr_tf2 = check_simclr_dir(args.simclr_dir)
    return args


def fixed_batch(args):
    """Two 32-px views per image, stacked on channels, float32 in [0, 1]."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    return rng.random((args.batch, 32, 32, 6), dtype="float32")


def learning_rate(args):
    # The reference's linear scaling: learning_rate · B / 256.
    return args.learning_rate * args.batch / 256


# === Workers ===


def _ours_contenders(args, names):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from unittest import mock

    import keras
    import tensorflow as tf

    import keras_ssl
    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import Views
    from keras_ssl.models import SimCLRv2Pretrainer
    from keras_ssl.models import simclrv2_pretrainer

    def split_views(layer, images, training=True):
        # The views come made, as the reference's tf.data pipeline makes
        # them: two images stacked on channels.
        return images[..., :3], images[..., 3:]

    def build(policy):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            encoder = ResNet(
                depth=18,
                width_multiplier=args.width,
                stem="cifar",
                input_shape=(32, 32, 3),
            )
            model = SimCLRv2Pretrainer(
                encoder,
                views=Views.from_preset("simclr_cifar", size=32),
                temperature=args.temperature,
                memory_size=0,
            )
            model.compile(
                optimizer=keras_ssl.optimizers.LARS(
                    learning_rate(args),
                    momentum=0.9,
                    weight_decay=args.weight_decay,
                )
            )
        finally:
            keras.config.set_dtype_policy(previous)
        return model

    batch = fixed_batch(args)
    made = tf.constant(batch)
    uint8 = tf.constant((batch[..., :3] * 255).astype("uint8"))
    steps, models = {}, {}
    for name in names:
        model = build("mixed_bfloat16" if name == "ours_bf16" else "float32")
        models[name] = model
        if name == "convolutions":
            convolutions = _convolutions_only(model.encoder, 2 * args.batch)
            steps[name] = lambda f=convolutions: {"loss": f().numpy()}
        elif name == "ours_views":
            steps[name] = lambda m=model: m.train_on_batch(uint8)

        else:

            def step(m=model):
                with mock.patch.object(
                    simclrv2_pretrainer, "compiled_call", split_views
                ):
                    return m.train_on_batch(made)

            steps[name] = step

    def info(name):
        model = models[name]
        return {
            "parameters": int(
                sum(
                    int(v.numpy().size)
                    for v in model.encoder.trainable_variables
                    + model.head.trainable_variables
                )
            ),
            "framework": f"Keras {keras.__version__}, TF {tf.__version__}",
            "convolution_flops": convolution_flops(
                model.encoder, 2 * args.batch
            ),
        }

    return steps, info


def _conv_layers(encoder):
    import keras

    return [
        layer
        for layer in encoder._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Conv2D)
    ]


def layer_flops(layer, batch):
    """FLOPs of one kernel of a `Conv2D` layer over `batch` images.

    2·H'·W'·k_h·k_w·C_in·C_out per image (H' × W' its output; a multiply
    and an add per weight per output position): its forward pass, and as
    much for the gradient of its kernel or of its input.
    """
    _, height, width, channels_out = layer.output.shape
    k_h, k_w, channels_in, _ = layer.kernel.shape
    return 2 * batch * height * width * k_h * k_w * channels_in * channels_out


def convolution_flops(encoder, batch):
    """Floating-point operations of the convolutions a training step runs.

    Each `Conv2D` of `encoder` runs its forward pass and the gradient of
    its kernel and, except for the first layer (whose input is the
    images), of its input (`layer_flops` each): what `_convolutions_only`
    runs.
    """
    return sum(
        layer_flops(layer, batch) * (3 if i > 0 else 2)
        for i, layer in enumerate(_conv_layers(encoder))
    )


def _convolutions_only(encoder, batch):
    """A step of only the convolutions `encoder`'s training step runs.

    For every `Conv2D` layer of the (functional) encoder: its forward
    pass, and the gradients of its kernel and, except for the first layer
    (whose input is the images), of its input, at the layer's shapes and
    `batch` images, on fixed random tensors.

    Returns:
        A `tf.function` of no arguments running them.
    """
    import tensorflow as tf

    layers = _conv_layers(encoder)
    rng = tf.random.Generator.from_seed(0)
    tensors = []
    for i, layer in enumerate(layers):
        x = rng.normal((batch, *layer.input.shape[1:]))
        dy = rng.normal((batch, *layer.output.shape[1:])) * 0.01
        tensors.append((layer, x, dy, i > 0))

    @tf.function
    def step():
        outputs = []
        for layer, x, dy, input_gradient in tensors:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer.convolution_op(x, layer.kernel)
            sources = [x, layer.kernel] if input_gradient else [layer.kernel]
            grads = tape.gradient(y, sources, output_gradients=dy)
            # One element of each result keeps every kernel in the graph.
            outputs += [y[0, 0, 0, 0]] + [g[(0,) * g.shape.rank] for g in grads]
        return tf.add_n(outputs)

    return step


def _define_reference_flags(args, **overrides):
    """The flags SimCLR's `run.py` defines and its model code reads.

    `run.py` itself is not imported (it needs tensorflow_datasets and
    reads data at start); these are its flags, set as its CIFAR-10
    pretraining command sets them, then as `overrides` set them (flags
    `run.py` defines that are not set here, e.g. `warmup_epochs`, are
    defined by naming them in `overrides`).
    """
    from absl import flags

    values = {
        "train_mode": "pretrain",
        "lineareval_while_pretraining": False,
        "fine_tune_after_block": -1,
        "resnet_depth": 18,
        "width_multiplier": args.width,
        "image_size": 32,
        "sk_ratio": 0.0,
        "se_ratio": 0.0,
        "global_bn": True,
        "batch_norm_decay": 0.9,
        "proj_head_mode": "nonlinear",
        "num_proj_layers": 3,
        "proj_out_dim": 128,
        "ft_proj_selector": 0,
        "use_blur": False,
        "optimizer": "lars",
        "momentum": 0.9,
        "weight_decay": args.weight_decay,
        "temperature": args.temperature,
        "hidden_norm": True,
        "train_batch_size": args.batch,
        "learning_rate": args.learning_rate,
        "learning_rate_scaling": "linear",
    }
    values.update(overrides)
    for key, value in values.items():
        if isinstance(value, bool):
            flags.DEFINE_boolean(key, value, "")
        elif isinstance(value, int):
            flags.DEFINE_integer(key, value, "")
        elif isinstance(value, float):
            flags.DEFINE_float(key, value, "")
        else:
            flags.DEFINE_string(key, value, "")
    flags.FLAGS(["vs_simclr_tf2"])
    return flags.FLAGS


def _reference_contenders(args, names):
    sys.path.insert(0, args.simclr_tf2)
    import tensorflow as tf

    FLAGS = _define_reference_flags(args)
    import model as model_lib

    # run.py without a TPU.
    strategy = tf.distribute.MirroredStrategy()
    features = tf.constant(fixed_batch(args))
    steps, models = {}, {}
    for name in names:
        # BatchNormRelu reads the flag when it is built.
        FLAGS.global_bn = name == "reference"
        with strategy.scope():
            model = model_lib.Model(num_classes=10)
            optimizer = model_lib.build_optimizer(learning_rate(args))
        single_step = ReferenceStep(model, optimizer, strategy)

        @tf.function
        def train_step(features, single_step=single_step):
            # The contrastive loss, as run.py's pretraining logs it.
            return strategy.experimental_local_results(
                strategy.run(single_step, (features,))
            )[0][0]

        models[name] = model
        steps[name] = lambda f=train_step: {"loss": f(features).numpy()}

    def info(name):
        return {
            "parameters": int(
                sum(
                    int(v.numpy().size)
                    for v in models[name].trainable_variables
                )
            ),
            "framework": f"tf.keras {tf.keras.__name__}, TF {tf.__version__}",
        }

    return steps, info


class ReferenceStep:
    """SimCLR's `run.py` `single_step`, for one model and optimizer.

    Its image summary aside (recorded once per loop of steps, and not
    without a summary writer), with its metrics. `run.py` defines it
    inside its `main`, so it is written out here from its code. Call it
    inside `strategy.run` with the replica's features and, in fine-tuning
    or with the linear eval, its one-hot labels; it returns the
    contrastive loss (`None` in fine-tuning) and the total loss, before
    the division by the number of replicas.
    """

    def __init__(self, model, optimizer, strategy):
        import tensorflow as tf
        from absl import flags

        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.flags = flags.FLAGS
        with strategy.scope():
            mean = tf.keras.metrics.Mean
            self.weight_decay_metric = mean("train/weight_decay")
            self.total_loss_metric = mean("train/total_loss")
            self.contrast_metrics = [
                mean(f"train/contrast_{name}")
                for name in ("loss", "acc", "entropy")
            ]
            self.supervised_metrics = [
                mean(f"train/supervised_{name}") for name in ("loss", "acc")
            ]

    def __call__(self, features, labels=None):
        import metrics
        import model as model_lib
        import objective as obj_lib
        import tensorflow as tf

        FLAGS, model, strategy = self.flags, self.model, self.strategy
        con_loss = None
        with tf.GradientTape() as tape:
            projection_head_outputs, supervised_head_outputs = model(
                features, training=True
            )
            loss = None
            if projection_head_outputs is not None:
                con_loss, logits_con, labels_con = obj_lib.add_contrastive_loss(
                    projection_head_outputs,
                    hidden_norm=FLAGS.hidden_norm,
                    temperature=FLAGS.temperature,
                    strategy=strategy,
                )
                loss = con_loss
                metrics.update_pretrain_metrics_train(
                    *self.contrast_metrics, con_loss, logits_con, labels_con
                )
            if supervised_head_outputs is not None:
                outputs = supervised_head_outputs
                if (
                    FLAGS.train_mode == "pretrain"
                    and FLAGS.lineareval_while_pretraining
                ):
                    labels = tf.concat([labels, labels], 0)
                sup_loss = obj_lib.add_supervised_loss(
                    labels=labels, logits=outputs
                )
                loss = sup_loss if loss is None else loss + sup_loss
                metrics.update_finetune_metrics_train(
                    *self.supervised_metrics, sup_loss, labels, outputs
                )
            weight_decay = model_lib.add_weight_decay(
                model, adjust_per_optimizer=True
            )
            self.weight_decay_metric.update_state(weight_decay)
            loss += weight_decay
            self.total_loss_metric.update_state(loss)
            total = loss
            loss = loss / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            self.optimizer.apply_gradients(
                zip(grads, model.trainable_variables)
            )
        return con_loss, total


def serve(start):
    """Runs a worker: `start()`, then one JSON answer per JSON request.

    `start()` builds what the worker serves and returns `(ready, handle)`:
    the dict sent once it is done, and a function from a request (a dict)
    to its answer (a dict). The protocol has the process's stdout to
    itself; anything else printed, by the worker or the libraries it
    loads, goes to stderr.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    ready, handle = start()
    channel.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        channel.write(json.dumps(handle(json.loads(line))) + "\n")


def worker(args):
    """Serves steps over stdin/stdout: one JSON line per request."""
    names = [
        n
        for n in args.contenders
        if n in (OURS if args.worker == "ours" else REFERENCE)
    ]
    build = _ours_contenders if args.worker == "ours" else _reference_contenders

    def handle(request):
        name = request["name"]
        if request["command"] == "profile":
            from op_profile import op_table
            from op_profile import op_times

            return {"table": op_table(op_times(steps[name], steps=2))}
        if request["command"] == "info":
            return info(name)
        wall, cpu = time.perf_counter(), time.process_time()
        logs = steps[name]()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loss = logs["loss"] if isinstance(logs, dict) else logs
        loss = float(loss[0] if hasattr(loss, "__len__") else loss)
        return {"wall": wall, "cpu": cpu, "loss": loss}

    def start():
        nonlocal steps, info
        steps, info = build(args, names)
        return {"ready": names}, handle

    steps = info = None
    serve(start)


# === Parent ===


def check_reference_python(python, env=None):
    """Checks that `python` can import `tf_keras`, in well under a second.

    SimCLR's TF2 code is Keras 2 code: with `TF_USE_LEGACY_KERAS=1`,
    `tf.keras` is the `tf_keras` package (pip's `tf-keras`, of the same
    minor version as TensorFlow). Only the package is looked up; nothing
    is imported.

    Raises:
        ValueError: naming `tf_keras` and `--reference-python` if it is
            not found.
    """
    probe = (
        "import importlib.util, sys; "
        "sys.exit(0 if importlib.util.find_spec('tf_keras') else 3)"
    )
    try:
        found = subprocess.run([python, "-c", probe], env=env).returncode == 0
    except OSError as error:
        raise ValueError(
            f"`--reference-python` cannot run ({error}). Received: "
            f"reference_python={python!r}"
        ) from None
    if not found:
        raise ValueError(
            "SimCLR's TF2 code needs the package `tf_keras` (pip install "
            "tf-keras, the version of TensorFlow's), which "
            f"`--reference-python` {python} cannot import (PYTHONPATH="
            f"{(env or os.environ).get('PYTHONPATH', '')!r}). Install it, "
            "add its directory to PYTHONPATH, or name another interpreter. "
            f"Received: reference_python={python!r}"
        )


class Worker:
    """A worker process of `script` (this file unless given), driven over
    its stdin and stdout: one JSON request and one JSON answer a line."""

    def __init__(self, kind, args, argv, script=None):
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        python = sys.executable
        if kind == "reference":
            env["TF_USE_LEGACY_KERAS"] = "1"
            python = args.reference_python
        else:
            env.pop("TF_USE_LEGACY_KERAS", None)
            env["KERAS_BACKEND"] = "tensorflow"
        self.process = subprocess.Popen(
            [
                python,
                os.path.abspath(script or __file__),
                "--worker",
                kind,
                *argv,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.names = self._read()["ready"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"A worker exited (status {self.process.wait()}); its "
                "error is above."
            )
        return json.loads(line)

    def ask(self, command, name, **fields):
        request = {"command": command, "name": name, **fields}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def _speedups(results, names):
    """Lines of speed-ups (reference time / our time, per cycle)."""
    lines = []
    for ours in OURS:
        for reference in REFERENCE:
            if ours in names and reference in names:
                lines.append(
                    f"{reference} / {ours}: "
                    + summary(results, reference, ours)
                )
    return lines


def _rates(results, infos, names):
    """Lines of convolution throughput at each contender's median wall time.

    Both sides run the same network, so our worker's count of the step's
    convolution FLOPs (`convolution_flops`) holds for the reference too.
    """
    import statistics

    flops = next(
        (infos[n]["convolution_flops"] for n in names if n in OURS), None
    )
    if not flops:
        return []
    lines = [
        f"Convolutions per step: {flops / 1e9:,.1f} GFLOP (forward, kernel "
        "and input gradients over the 2·B views); at each median wall time:"
    ]
    rates = {}
    for name in names:
        rates[name] = flops / statistics.median(results[name]["wall"]) / 1e9
        lines.append(f"  {name}: {rates[name]:,.1f} GFLOP/s")
    for reference in REFERENCE:
        if reference in rates:
            lines.append(
                f"  1.25x {reference} needs {1.25 * rates[reference]:,.1f} "
                "GFLOP/s"
            )
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    workers = {}
    try:
        for kind, kinds in (("reference", REFERENCE), ("ours", OURS)):
            if any(n in kinds for n in args.contenders):
                workers[kind] = Worker(kind, args, argv)
        owner = {n: w for w in workers.values() for n in w.names}
        order = [n for n in args.contenders if n in owner]
        for _ in range(args.warmup):
            for name in order:
                owner[name].ask("step", name)
        results = {n: {"wall": [], "cpu": [], "loss": []} for n in order}
        for _ in range(args.steps):
            for name in order:
                timing = owner[name].ask("step", name)
                for key in ("wall", "cpu", "loss"):
                    results[name][key].append(timing[key])
        infos = {n: owner[n].ask("info", n) for n in order}
        profiles = {}
        if args.profile:
            profiles = {n: owner[n].ask("profile", n)["table"] for n in order}
    finally:
        for w in workers.values():
            w.close()
    baseline = next((n for n in order if n in REFERENCE), order[0])
    print(machine())
    print(
        f"batch {args.batch}, CIFAR ResNet-18 width {args.width}, two 32-px "
        f"views, LARS lr {learning_rate(args):g} wd {args.weight_decay:g}, "
        f"temperature {args.temperature:g}; {args.warmup} warm-up and "
        f"{args.steps} timed steps per contender, in alternation"
    )
    for name in order:
        print(
            f"{name}: {infos[name]['framework']}, "
            f"{infos[name]['parameters']:,} trainable parameters, "
            f"loss {results[name]['loss'][0]:.4f} -> "
            f"{results[name]['loss'][-1]:.4f}"
        )
    print(report(results, baseline=baseline))
    lines = _speedups(results, order)
    if lines:
        print("Speed-up (reference time / our time, per cycle):")
        for line in lines:
            print("  " + line)
    for line in _rates(results, infos, order):
        print(line)
    for name, table in profiles.items():
        print(f"{name}, by op type (2 traced steps):\n{table}")
    return results


if __name__ == "__main__":
    main()
