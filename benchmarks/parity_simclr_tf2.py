"""Whole training steps of keras-ssl's SimCLRv2 against SimCLR's own TF2 code.

The reference is google-research/simclr's `tf2/` code, imported from a
checkout the user names (nothing of it is copied here), in its own worker
process with `tf_keras` (see `benchmarks/vs_simclr_tf2.py` for the
environment):

    PYTHONPATH=.:/path/to/tf_keras_site python \\
        benchmarks/parity_simclr_tf2.py --simclr-dir /path/to/simclr

For each case both workers start from the same weights: the reference
builds its `model.Model` under `MirroredStrategy` and writes it, with its
optimizer, as a `tf.train.Checkpoint(model=..., global_step=...,
optimizer=...)` through a `CheckpointManager`, as its `run.py` does; our
worker reads that checkpoint with `keras_ssl.pretrained.load_simclr` and
copies the encoder, projection head and supervised head into keras-ssl's
model. Then the parent steps both in alternation on the same batches
(two views stacked on channels, float in [0, 1], and labels; the
reference gets the (B, 32, 32, 6) stack, ours the same two views in
place of its `Views` layer, as `vs_simclr_tf2.py` feeds them), split
over the replicas by the same `tf.data` distribution. After chosen steps
the reference writes another checkpoint and ours compares every weight
(encoder, head, probe or classifier, BatchNorm moving statistics) and
every LARS momentum slot with it:

    max relative difference = max |ours - reference| / max |reference|

per tensor (0 when both are 0).

Cases (`--cases`):

- `pretrain-r{1,2}-{linear,sqrt}`: `--train_mode=pretrain
  --lineareval_while_pretraining=True --global_bn=True` on 1 or 2
  replicas (logical CPU devices, `MirroredStrategy` on both sides, the
  same global batch), with `learning_rate_scaling` linear or sqrt, the
  warm-up + cosine schedule of `model.py` (`--examples` images an epoch,
  `--warmup-epochs`, `--train-steps`), LARS with weight decay and its
  exclusions as `model.build_optimizer` sets them, the 3-layer head with
  `proj_out_dim` 128. Ours: `SimCLRv2Pretrainer` (no memory) with the
  ResNet and head the recipe builds (`synchronized_bn`) and its optimizer
  (`recipes.stages.lars`).
- `finetune-ft{1,0}`: `--train_mode=finetune --fine_tune_after_block=-1
  --zero_init_logits_layer=True --ft_proj_selector={1,0}` with the
  settings of the reference's README for fine-tuning the whole network
  (LARS, `--learning_rate=0.005 --learning_rate_scaling=sqrt
  --weight_decay=0 --warmup_epochs=0 --global_bn=True`). Ours:
  `FineTuner(ft_layer=...)` with the fine-tuning stage's LARS, without
  LP-FT (no linear head fitted first, BatchNorm in training mode) or
  WiSE-FT (no interpolation), and its crop bypassed.

By design our online probe trains on the first view of the labeled
images only, SimCLR's supervised head on both views; `--probe-views
both` makes ours use both, for the comparison. Our probe also steps at a
rate of its own by default (`probe_learning_rate`); both the step
comparisons and the short runs give it SimCLR's coupling
(`probe_learning_rate=None`: the pretraining rate).

`--float64` runs both sides in float64 (Keras 3's floatx on ours,
`tf.keras.backend.set_floatx` on the reference). SimCLR's code does not
run in float64 as it is: its NT-Xent builds float32 one-hot labels and
masks (`tf.one_hot`'s default) and subtracts them from float64 logits,
its schedule mixes its float64 warm-up with `CosineDecay`'s float32
(tf_keras's `CosineDecay` computes in its initial rate's dtype, float32
for a Python float), and its LARS multiplies its float64 momentum slots
by a float32 tensor of the Python momentum (`tf.multiply(self.momentum,
v)`). So in float64 the worker gives `objective.py` a `tf.one_hot` that
makes floatx tensors, gives `model.py` a `CosineDecay` that computes in
its step's dtype (the whole schedule in float64, as ours computes it
under a float64 floatx), and sets the optimizer's `momentum` to a
float64 tensor of the same value; the checkout itself is not modified.

Prints the command, the machine, and per case a table: weight (group) ->
max relative difference after each compared step, then every tensor
above `--show-above`.

Short runs (`--short-runs --data-dir DIR`, CIFAR-10 as the NumPy arrays
`train.npz` and `test.npz`): each side trains from its own
initialisation with its own augmentations on the same `--images`
CIFAR-10 training images (a fixed shuffle), the same image indices each
step (per seed; the reference's views are not seeded, see
`_reference_run`), the same settings and step budget, one run at a time,
each in a fresh worker process. The reference: `model.Model` (CIFAR stem
at 32 px and below, `--width_multiplier` `--width`), its `run.py`
`single_step` with the linear-eval head, its warm-up + cosine schedule
and LARS as above, and its views as `data.py` makes them for
pretraining: `data_util.preprocess_image(..., is_training=True,
color_jitter_strength=--color-strength, test_crop=False)` twice per
image (random crop and resize, flip, colour jitter with probability 0.8
and greyscale with 0.2; no blur: `--use_blur=False` for CIFAR), in a
`tf.data` map. Ours: `SimCLRv2Pretrainer(memory_size=0, num_classes=10)`
on the CIFAR-stem `ResNet` of the same depth and width with the
`simclr_cifar` `Views` preset making its views in the step, and the
recipe's LARS (`recipes.stages.lars`). Both: `--warmup-fraction` of the
steps warming up, then cosine decay to 0. Every image of a batch is
labeled, for both probes. Per run it prints NT-Xent (the mean of its two
directions, SimCLR's eq. 1: half the sum the reference's code reports)
averaged over windows of `--window` steps, the probe's accuracy on the
last window's batches, and k-NN accuracy (k = 20, cosine, majority
vote) of the encoder output of 1,000 test images against the training
images, before the first step and after the last; then means ± standard
deviations over the seeds, per side.
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import machine  # noqa: E402
from vs_simclr_tf2 import ReferenceStep  # noqa: E402
from vs_simclr_tf2 import Worker  # noqa: E402
from vs_simclr_tf2 import _define_reference_flags  # noqa: E402
from vs_simclr_tf2 import add_reference_arguments  # noqa: E402
from vs_simclr_tf2 import check_reference_python  # noqa: E402
from vs_simclr_tf2 import check_simclr_dir  # noqa: E402
from vs_simclr_tf2 import serve  # noqa: E402

# Every file of the checkout's `tf2/` that the reference worker imports
# (`model.py` imports `data_util.py`).
REFERENCE_FILES = (
    "model.py",
    "resnet.py",
    "lars_optimizer.py",
    "objective.py",
    "metrics.py",
    "data_util.py",
)
CASES = (
    "pretrain-r1-linear",
    "pretrain-r2-linear",
    "pretrain-r1-sqrt",
    "pretrain-r2-sqrt",
    "finetune-ft1",
    "finetune-ft0",
)
NUM_CLASSES = 10
SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_reference_arguments(parser)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--compare-at",
        default="1,2",
        help="steps after which to compare, besides the last",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument(
        "--contrastive-loss",
        choices=("mean", "sum"),
        default="mean",
        help="our NT-Xent: the mean of its two directions (SimCLR eq. 1, "
        "ours as shipped) or their sum (SimCLR's code)",
    )
    parser.add_argument(
        "--probe-views",
        choices=("first", "both"),
        default="first",
        help="views our probe trains on: ours as shipped, or SimCLR's",
    )
    # Pretraining: the reference's CIFAR-10 command in its README.
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument(
        "--examples",
        type=int,
        default=160,
        help="images an epoch, for the warm-up's length",
    )
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--train-steps", type=int, default=30)
    # Fine-tuning: the reference's README for the whole network.
    parser.add_argument("--finetune-learning-rate", type=float, default=0.005)
    parser.add_argument("--finetune-weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--show-above",
        type=float,
        default=1e-5,
        help="list every tensor whose difference exceeds this",
    )
    # Short runs side by side.
    parser.add_argument(
        "--short-runs",
        action="store_true",
        help="train both sides with their own augmentations on CIFAR-10",
    )
    parser.add_argument(
        "--data-dir", help="folder with CIFAR-10's train.npz and test.npz"
    )
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sides", default="reference,ours")
    parser.add_argument(
        "--width",
        type=float,
        help="ResNet-18 width multiplier of the short runs (default 0.25; "
        "the comparisons run width 1)",
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument(
        "--color-strength",
        type=float,
        default=0.5,
        help="the reference's --color_jitter_strength (simclr_cifar's)",
    )
    parser.add_argument(
        "--window",
        type=int,
        help="steps per loss window (default: a fifth of --steps)",
    )
    parser.add_argument("--worker", choices=("ours", "reference"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short_runs:
        return _check_short_runs(args)
    if args.width not in (None, 1):
        raise ValueError(
            "`--width` is for `--short-runs`; the step comparisons run "
            f"width 1. Received: width={args.width}"
        )
    if args.batch < 2 or args.batch % 2 or args.steps < 1:
        raise ValueError(
            "`--batch` must be even and >= 2 (it is split over 2 replicas), "
            f"`--steps` >= 1. Received: batch={args.batch}, "
            f"steps={args.steps}"
        )
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise ValueError(
            f"`--cases` must be among {', '.join(CASES)}. Received: "
            f"cases={args.cases!r}"
        )
    args.cases = names
    try:
        compare = {int(s) for s in args.compare_at.split(",") if s}
    except ValueError:
        compare = {0}
    if any(not 1 <= s <= args.steps for s in compare):
        raise ValueError(
            f"`--compare-at` must list steps in [1, {args.steps}]. "
            f"Received: compare_at={args.compare_at!r}"
        )
    args.compare = sorted(compare | {args.steps})
    if args.worker != "ours":
        args.simclr_tf2 = check_simclr_dir(args.simclr_dir, REFERENCE_FILES)
    # What vs_simclr_tf2's flags read.
    args.width = 1
    return args


SIDES = ("reference", "ours")
IMAGE_SIZES = (32, 16)


def _check_short_runs(args):
    """Checks the short runs' arguments; `args` with them parsed."""
    if not args.data_dir or not all(
        os.path.isfile(os.path.join(args.data_dir, f"{name}.npz"))
        for name in ("train", "test")
    ):
        raise ValueError(
            "`--short-runs` needs `--data-dir`, a folder holding CIFAR-10 "
            "as train.npz and test.npz (arrays `x`, `y`). Received: "
            f"data_dir={args.data_dir!r}"
        )
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        seeds = []
    if not seeds:
        raise ValueError(
            "`--seeds` must list integers, e.g. 0,1,2. Received: "
            f"seeds={args.seeds!r}"
        )
    sides = [s for s in args.sides.split(",") if s]
    if not sides or any(s not in SIDES for s in sides):
        raise ValueError(
            f"`--sides` must be among {', '.join(SIDES)}. Received: "
            f"sides={args.sides!r}"
        )
    if args.image_size not in IMAGE_SIZES:
        raise ValueError(
            f"`--image-size` must be one of {IMAGE_SIZES} (CIFAR-10's 32 "
            f"px, or averaged down 2x2). Received: image_size="
            f"{args.image_size}"
        )
    if args.width is None:
        args.width = 0.25
    if args.window is None:
        args.window = max(1, args.steps // 5)
    if not 0 <= args.warmup_fraction <= 1:
        raise ValueError(
            "`--warmup-fraction` must be in [0, 1]. Received: "
            f"warmup_fraction={args.warmup_fraction}"
        )
    checks = (
        ("batch", args.batch >= 2),
        ("steps", args.steps >= 1),
        ("images", args.batch <= args.images <= 50000),
        ("width", args.width > 0 and (64 * args.width).is_integer()),
        ("window", 1 <= args.window <= args.steps),
    )
    for name, ok in checks:
        if not ok:
            raise ValueError(
                f"`--{name}` must be: batch >= 2, steps >= 1, batch <= "
                "images <= 50000, width > 0 with 64·width whole, 1 <= "
                f"window <= steps. Received: {name}={getattr(args, name)}"
            )
    args.seed_list, args.side_list = seeds, sides
    if args.worker != "ours" and "reference" in sides:
        args.simclr_tf2 = check_simclr_dir(args.simclr_dir, REFERENCE_FILES)
    return args


def run_settings(args):
    """The short runs' schedule, and the reference's flags for it.

    The reference's warm-up is `round(warmup_epochs · examples // batch)`
    steps (`model.WarmUpAndCosineDecay`); `warmup_epochs` is chosen so
    that it is `round(warmup_fraction · steps)`, ours.
    """
    warmup_steps = int(round(args.warmup_fraction * args.steps))
    warmup_epochs = warmup_steps * args.batch / args.images
    theirs = int(round(warmup_epochs * args.images // args.batch))
    if theirs != warmup_steps:
        # Rounding of the epochs' float: half a step more fixes it.
        warmup_epochs = (warmup_steps + 0.5) * args.batch / args.images
    return {
        "warmup_steps": warmup_steps,
        "flags": {
            "train_mode": "pretrain",
            "lineareval_while_pretraining": True,
            "width_multiplier": args.width,
            "image_size": args.image_size,
            "learning_rate": args.learning_rate,
            "learning_rate_scaling": "linear",
            "weight_decay": args.weight_decay,
            "temperature": args.temperature,
            "warmup_epochs": warmup_epochs,
            "train_steps": args.steps,
            "train_epochs": 1,
            "color_jitter_strength": args.color_strength,
        },
    }


def step_indices(num_images, batch, steps, seed):
    """`(steps, batch)` image indices, each step without repeats; the same
    for both sides of a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.choice(num_images, batch, replace=False) for _ in range(steps)]
    )


def load_images(args):
    """`--images` shuffled CIFAR-10 training images, 1,000 test images
    (`parity_semppl.load_cifar`'s fixed shuffle), at `--image-size`."""
    import types

    from parity_semppl import load_cifar

    data = load_cifar(
        types.SimpleNamespace(
            data_dir=args.data_dir, images=args.images, labels_per_class=0
        )
    )
    if args.image_size != SIZE:
        for key in ("x", "test_x"):
            data[key] = downsample(data[key])
    return data


def downsample(images):
    """uint8 images averaged over 2x2 blocks (half the size), rounded."""
    import numpy as np

    n, h, w, c = images.shape
    blocks = images.reshape(n, h // 2, 2, w // 2, 2, c).astype("float32")
    return np.round(blocks.mean(axis=(2, 4))).astype("uint8")


def loss_windows(curve, window):
    """Means of `curve` over consecutive windows of `window` steps (a
    shorter last one when `window` does not divide its length)."""
    import numpy as np

    return [
        float(np.mean(curve[i : i + window]))
        for i in range(0, len(curve), window)
    ]


def mean_std(values):
    """(mean, population standard deviation) of `values`."""
    import numpy as np

    return float(np.mean(values)), float(np.std(values))


def case_settings(args, case):
    """The reference's flags and our optimizer's settings for `case`."""
    mode = case.split("-")[0]
    settings = {"mode": mode, "replicas": 1, "ft_layer": 0}
    if mode == "pretrain":
        _, replicas, scaling = case.split("-")
        settings.update(
            replicas=int(replicas[1:]),
            scaling=scaling,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs,
        )
    else:
        settings.update(
            ft_layer=int(case.split("-")[1][2:]),
            scaling="sqrt",
            learning_rate=args.finetune_learning_rate,
            weight_decay=args.finetune_weight_decay,
            warmup_epochs=0.0,
        )
    # model.py's WarmUpAndCosineDecay.
    settings["warmup_steps"] = int(
        round(settings["warmup_epochs"] * args.examples // args.batch)
    )
    settings["flags"] = {
        "train_mode": mode,
        "lineareval_while_pretraining": mode == "pretrain",
        "fine_tune_after_block": -1,
        "global_bn": True,
        "ft_proj_selector": settings["ft_layer"],
        "zero_init_logits_layer": mode == "finetune",
        "learning_rate": settings["learning_rate"],
        "learning_rate_scaling": settings["scaling"],
        "weight_decay": settings["weight_decay"],
        "warmup_epochs": settings["warmup_epochs"],
        "train_steps": args.train_steps,
        "train_epochs": 1,
    }
    return settings


def batches(args):
    """`steps` batches: two views stacked on channels, and labels."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    channels = 6 if case_settings(args, args.case)["mode"] == "pretrain" else 3
    images = rng.random((args.steps * args.batch, SIZE, SIZE, channels))
    labels = rng.integers(0, NUM_CLASSES, args.steps * args.batch)
    # float32 values on both sides, also when the networks run in float64.
    return images.astype("float32"), labels.astype("int32")


def _strategy(tf, replicas):
    """`MirroredStrategy` over `replicas` logical CPU devices.

    Must run before anything else initialises TensorFlow's devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    if replicas > 1:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
        )
    devices = [f"/cpu:{i}" for i in range(replicas)]
    return tf.distribute.MirroredStrategy(devices)


def _distributed(tf, strategy, args):
    """An iterator over the batches, split over the replicas as Keras
    and the reference's input pipeline split a global batch."""
    images, labels = batches(args)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return iter(
        strategy.experimental_distribute_dataset(dataset.batch(args.batch))
    )


# === The reference ===


class _FloatxOneHot:
    """`tensorflow` with a `one_hot` that makes floatx tensors, for the
    reference's `objective.py` in float64 (see the module docstring)."""

    def __init__(self, tf):
        self._tf = tf

    def __getattr__(self, name):
        return getattr(self._tf, name)

    def one_hot(self, *args, **kwargs):
        kwargs.setdefault("dtype", self._tf.keras.backend.floatx())
        return self._tf.one_hot(*args, **kwargs)


class _ScalarWhere(_FloatxOneHot):
    """`tensorflow` with a `where` that gives a Python number the other
    branch's dtype, for the reference's `model.py` in float64: without
    warm-up its schedule picks between its Python rate and `CosineDecay`'s
    tensor, and a graph makes the number float32."""

    def where(self, condition, x=None, y=None, name=None):
        tf = self._tf
        if isinstance(x, (int, float)) and tf.is_tensor(y):
            x = tf.constant(x, y.dtype)
        return tf.where(condition, x, y, name=name)


def _reference_start(args):
    import tensorflow as tf

    settings = case_settings(args, args.case)
    strategy = _strategy(tf, settings["replicas"])
    if args.float64:
        tf.keras.backend.set_floatx("float64")
    sys.path.insert(0, args.simclr_tf2)
    FLAGS = _define_reference_flags(args, **settings["flags"])
    import model as model_lib
    import objective as obj_lib

    if args.float64:
        obj_lib.tf = _FloatxOneHot(tf)
        model_lib.tf = _ScalarWhere(tf)
        _floatx_cosine_decay(tf)
    floatx = tf.keras.backend.floatx()
    tf.random.set_seed(args.seed)
    with strategy.scope():
        model = model_lib.Model(NUM_CLASSES)
        schedule = model_lib.WarmUpAndCosineDecay(
            FLAGS.learning_rate, args.examples
        )
        optimizer = model_lib.build_optimizer(schedule)
        if args.float64:
            # `tf.multiply(self.momentum, v)` makes a float32 tensor of a
            # Python float, which a float64 slot does not take.
            optimizer.momentum = tf.constant(optimizer.momentum, floatx)
        channels = 6 if settings["mode"] == "pretrain" else 3
        # Keras 2 builds the variables on the first call.
        model(tf.zeros((2, SIZE, SIZE, channels), floatx), training=False)
    if FLAGS.zero_init_logits_layer:
        # run.py, restoring a pretrained checkpoint for fine-tuning.
        for x in model.supervised_head.trainable_weights:
            x.assign(tf.zeros_like(x))
    directory = tempfile.mkdtemp(prefix="parity_simclr_tf2_")
    checkpoint = tf.train.Checkpoint(
        model=model, global_step=optimizer.iterations, optimizer=optimizer
    )
    manager = tf.train.CheckpointManager(
        checkpoint, directory=directory, max_to_keep=None
    )

    single_step = ReferenceStep(model, optimizer, strategy)

    @tf.function
    def train_step(iterator):
        def replica_step(features, labels):
            # run.py's input pipeline makes one-hot labels.
            return single_step(
                features, tf.one_hot(labels, NUM_CLASSES, dtype=floatx)
            )

        losses = strategy.run(replica_step, next(iterator))
        return strategy.experimental_local_results(losses)[0][1]

    iterator = _distributed(tf, strategy, args)

    def handle(request):
        if request["command"] == "save":
            return {"prefix": manager.save(int(optimizer.iterations.numpy()))}
        return {"loss": float(train_step(iterator).numpy())}

    ready = {
        "prefix": manager.save(0),
        # What the reference's LARS leaves out of its trust ratio (and,
        # being the same list, out of its weight decay).
        "excluded_by_name": [
            v.name
            for v in model.trainable_variables
            if not optimizer._do_layer_adaptation(v.name)
        ],
    }
    return {"ready": ready}, handle


def _floatx_cosine_decay(tf):
    """Makes `tf.keras.experimental.CosineDecay`, which the reference's
    `WarmUpAndCosineDecay` builds at each call, compute in its step's
    float dtype (the variable's, float64 here): it computes in its initial
    rate's dtype, float32 for a Python float."""
    base = tf.keras.experimental.CosineDecay

    class StepDtypeCosineDecay(base):
        def __call__(self, step):
            step = tf.convert_to_tensor(step)
            dtype = step.dtype if step.dtype.is_floating else tf.float32
            rate = self.initial_learning_rate
            self.initial_learning_rate = tf.constant(rate, dtype)
            try:
                return super().__call__(step)
            finally:
                self.initial_learning_rate = rate

    tf.keras.experimental.CosineDecay = StepDtypeCosineDecay


# === Ours ===


def _views_given(layer, images, training=True):
    # The views come made, as the reference's tf.data pipeline makes them:
    # two images stacked on channels.
    return images[..., :3], images[..., 3:]


def _crop_bypassed(layer, images, training=True):
    # The reference fine-tunes on the images its input pipeline made.
    return images


def _ours_start(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    settings = case_settings(args, args.case)
    strategy = _strategy(tf, settings["replicas"])
    import keras

    if args.float64:
        keras.config.set_floatx("float64")
    from keras_ssl.models import fine_tuner
    from keras_ssl.models import simclrv2_pretrainer

    # Patched for the life of the worker: the train function is traced on
    # its first call.
    simclrv2_pretrainer.compiled_call = _views_given
    fine_tuner.compiled_call = _crop_bypassed
    state = {}

    def handle(request):
        command = request["command"]
        if command == "load":
            state.update(
                _ours_model(args, settings, strategy, request["prefix"])
            )
            state["batches"] = batches(args)
            state["step"] = 0
            return {"parameters": state["parameters"]}
        if command == "compare":
            return {"rows": _compare(state, request["prefix"])}
        # Keras's own fit, one step a call, splits the global batch over
        # the replicas as the reference's tf.data distribution does.
        images, labels = state["batches"]
        rows = slice(
            state["step"] * args.batch, (state["step"] + 1) * args.batch
        )
        state["step"] += 1
        dataset = tf.data.Dataset.from_tensor_slices(
            (images[rows], labels[rows])
        ).batch(args.batch)
        # keras.Model.fit: the models' own check their images have 3
        # channels, and ours come as two views stacked on channels.
        history = keras.Model.fit(state["model"], dataset, epochs=1, verbose=0)
        return {"loss": float(history.history["loss"][0])}

    return {"ready": True}, handle


def _ours_model(args, settings, strategy, prefix):
    """Our model for the case, with the weights of the reference's
    checkpoint at `prefix` (read by `keras_ssl.pretrained.load_simclr`)."""
    from keras import ops

    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.models import FineTuner
    from keras_ssl.pretrained import load_simclr
    from keras_ssl.pretrained.pretrained_model import relative_path
    from keras_ssl.recipes import stages

    loaded = load_simclr(prefix, ft_layer=settings["ft_layer"])
    # As the recipe builds them: synchronized over several replicas (the
    # reference's --global_bn=True), fused BatchNorm on one.
    sync = settings["replicas"] > 1
    with strategy.scope():
        encoder = ResNet(
            depth=18,
            width_multiplier=1,
            stem="cifar",
            synchronized_bn=sync,
            input_shape=(SIZE, SIZE, 3),
        )
        head = ProjectionHead(
            num_layers=3, output_dim=128, synchronized_bn=sync
        )
        head.build(tuple(encoder.output.shape))
        if settings["mode"] == "pretrain":
            model = _pretrainer(args, encoder, head, SIZE)
            classifier = model.probe
        else:
            model = FineTuner(
                encoder,
                num_classes=NUM_CLASSES,
                head=head,
                ft_layer=settings["ft_layer"],
                frozen_batch_norm=False,
            )
            classifier = model.classifier
        for ours, theirs in (
            (encoder, loaded.encoder),
            (head, loaded.head),
            (classifier, loaded.classifier),
        ):
            values = {relative_path(theirs, v): v for v in theirs.weights}
            for variable in ours.weights:
                variable.assign(
                    ops.convert_to_numpy(values[relative_path(ours, variable)])
                )
        optimizer = stages.lars(
            settings["learning_rate"],
            args.batch,
            settings["scaling"],
            args.train_steps,
            warmup_steps=settings["warmup_steps"],
            weight_decay=settings["weight_decay"],
        )
        model.compile(optimizer=optimizer)
    return {
        "model": model,
        "pairs": _pairs(settings, encoder, head, classifier),
        "parameters": int(
            sum(int(ops.size(v)) for v in model.trainable_variables)
        ),
    }


def _pretrainer(args, encoder, head, size):
    """`SimCLRv2Pretrainer` without memory, with a probe and the
    `simclr_cifar` views at `size` px; with `--contrastive-loss sum` or
    `--probe-views both` a subclass aligned with SimCLR's code there."""
    from keras import ops

    from keras_ssl.layers import Views
    from keras_ssl.models import SimCLRv2Pretrainer

    class Aligned(SimCLRv2Pretrainer):
        def compute_ssl_loss(self, data, training=True):
            loss, logs = super().compute_ssl_loss(data, training)
            if args.contrastive_loss == "sum":
                # SimCLR's code sums the two directions' cross-entropies:
                # twice eq. (1)'s mean over the 2N anchors.
                loss = loss + logs["contrastive_loss"]
            return loss, logs

        def _probe(self, h, labels, batch):
            if args.probe_views == "first":
                return super()._probe(h, labels, batch)
            # Both views of every image, as SimCLR's supervised head; the
            # batch is all labeled here, so its last 2B rows are h.
            labels = ops.concatenate([labels, labels])
            return super()._probe(h, labels, 2 * batch)

    return Aligned(
        encoder,
        head=head,
        views=Views.from_preset("simclr_cifar", size=size),
        temperature=args.temperature,
        memory_size=0,
        num_classes=NUM_CLASSES,
        # SimCLR's supervised head steps at the pretraining rate; ours has
        # a rate of its own by default (`probe_learning_rate`).
        probe_learning_rate=None,
    )


def _pairs(settings, encoder, head, classifier):
    """`(group, name, our variable, reference object path)` of every
    weight both models have."""
    from keras_ssl.pretrained.pretrained_model import relative_path
    from keras_ssl.pretrained.simclr import BN_VARIABLES
    from keras_ssl.pretrained.simclr import _units

    ours = {
        f"{part}/{relative_path(layer, v)}": v
        for part, layer in (
            ("encoder", encoder),
            ("head", head),
            ("classifier", classifier),
        )
        for v in layer.weights
    }
    paths = {}
    for kind, target, path in _units(18, "cifar", False, False):
        for name in ("kernel",) if kind == "conv" else BN_VARIABLES:
            paths[f"encoder/{target}/{name}"] = f"{path}/{name}"
    # Fine-tuning keeps the first `ft_layer` head layers.
    layers = 3 if settings["mode"] == "pretrain" else settings["ft_layer"]
    for j in range(layers):
        scope = f"_projection_head/linear_layers/{j}"
        paths[f"head/dense_{j}/kernel"] = f"{scope}/dense/kernel"
        for name in BN_VARIABLES:
            paths[f"head/bn_{j}/{name}"] = f"{scope}/bn_relu/bn/{name}"
    for name in ("kernel", "bias"):
        paths[f"classifier/{name}"] = (
            f"supervised_head/linear_layer/dense/{name}"
        )
    pairs = []
    for name, path in paths.items():
        if name in ours:
            pairs.append((_group(name), name, ours[name], path))
    return pairs


def _group(name):
    part, *_, last = name.split("/")
    if last in ("moving_mean", "moving_variance"):
        return f"{part} BN moving statistics"
    if last in ("gamma", "beta"):
        return f"{part} BN gamma, beta"
    return f"{part} {last}s" if part != "classifier" else f"{part} {last}"


SLOT = ".OPTIMIZER_SLOT/optimizer/Momentum/.ATTRIBUTES/VARIABLE_VALUE"


def _compare(state, prefix):
    """Rows `[group, name, difference]` of every weight and momentum slot
    against the reference's checkpoint at `prefix`."""
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from keras_ssl.pretrained.simclr import _ObjectNames

    reader = tf.train.load_checkpoint(prefix)
    names = _ObjectNames(reader)
    model = state["model"]
    optimizer = model.optimizer
    trainable = {id(v) for v in model.trainable_variables}
    rows = [
        [
            "optimizer iterations",
            "iterations",
            float(
                int(ops.convert_to_numpy(optimizer.iterations))
                != int(
                    reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")
                )
            ),
        ]
    ]
    for group, name, variable, path in state["pairs"]:
        key = names.paths[names.root + path]
        theirs = reader.get_tensor(key)
        rows.append(
            [group, name, _difference(ops.convert_to_numpy(variable), theirs)]
        )
        if id(variable) in trainable:
            index = optimizer._get_variable_index(variable)
            momentum = ops.convert_to_numpy(optimizer._momentums[index])
            theirs = reader.get_tensor(
                key.replace(".ATTRIBUTES/VARIABLE_VALUE", SLOT)
            )
            rows.append(
                [
                    f"{group} momentum",
                    f"{name} momentum",
                    _difference(momentum, theirs),
                ]
            )
    return [[g, n, float(np.float64(d))] for g, n, d in rows]


def _difference(ours, theirs):
    """max |ours - theirs| / max |theirs| (0 when both are 0)."""
    import numpy as np

    ours = np.asarray(ours, "float64")
    theirs = np.asarray(theirs, "float64")
    if ours.shape != theirs.shape:
        raise ValueError(f"Shapes differ: {ours.shape} vs {theirs.shape}")
    error = np.max(np.abs(ours - theirs))
    scale = np.max(np.abs(theirs))
    if error == 0:
        return 0.0
    return float(error / scale) if scale > 0 else float("inf")


# === Parent ===


def run_case(args, argv, case):
    """Steps both workers through `case`; returns its rows by step."""
    argv = [*argv, "--case", case]
    reference = Worker("reference", args, argv, script=__file__)
    losses, rows = [], {}
    prefix = reference.names["prefix"]
    try:
        ours = Worker("ours", args, argv, script=__file__)
        try:
            ours.ask("load", case, prefix=prefix)
            for step in range(1, args.steps + 1):
                theirs = reference.ask("step", case)["loss"]
                mine = ours.ask("step", case)["loss"]
                losses.append((theirs, mine))
                if step in args.compare:
                    saved = reference.ask("save", case)["prefix"]
                    rows[step] = ours.ask("compare", case, prefix=saved)["rows"]
        finally:
            ours.close()
    finally:
        reference.close()
        shutil.rmtree(os.path.dirname(prefix), ignore_errors=True)
    excluded = reference.names["excluded_by_name"]
    return losses, rows, excluded


def _short(name):
    """A reference variable name without its layer indices."""
    parts = name.split(":")[0].split("/")
    return "/".join(p for p in parts if not p.isdigit())


def grouped(rows_by_step):
    """`{group: {step: max difference}}` in first-seen order."""
    table = {}
    for step, rows in rows_by_step.items():
        for group, _, value in rows:
            column = table.setdefault(group, {})
            column[step] = max(column.get(step, 0.0), value)
    return table


def markdown(rows_by_step):
    steps = list(rows_by_step)
    lines = [
        "| weights | "
        + " | ".join(f"after {s} step{'s' if s > 1 else ''}" for s in steps)
        + " |",
        "|---|" + "---|" * len(steps),
    ]
    for group, values in grouped(rows_by_step).items():
        cells = " | ".join(f"{values[s]:.1e}" for s in steps)
        lines.append(f"| {group} | {cells} |")
    return "\n".join(lines)


# === Short runs ===


def _reference_run(args):
    """The reference's short run of `--seed`: its step, views, schedule."""
    import time

    import numpy as np
    import tensorflow as tf

    strategy = _strategy(tf, 1)
    sys.path.insert(0, args.simclr_tf2)
    FLAGS = _define_reference_flags(args, **run_settings(args)["flags"])
    import data_util
    import model as model_lib

    data = load_images(args)
    size = args.image_size
    tf.random.set_seed(args.seed)
    with strategy.scope():
        model = model_lib.Model(NUM_CLASSES)
        schedule = model_lib.WarmUpAndCosineDecay(
            FLAGS.learning_rate, args.images
        )
        optimizer = model_lib.build_optimizer(schedule)
        model(tf.zeros((2, size, size, 6)), training=False)
    single_step = ReferenceStep(model, optimizer, strategy)
    accuracy_metric = single_step.supervised_metrics[1]
    # No global seed for the views' pipeline, as run.py sets none: with
    # one, the two views' colour jitter, drawn in `tf.cond` branches of
    # the map function, take the same op seeds and come out identical (the
    # crops differ): views far easier than the reference's own. (The seed
    # set above does not fix the reference's initial weights either: its
    # k-NN before training differs between runs of one seed.)
    tf.random.set_seed(None)

    def views(image, label):
        # data.py's map_fn for pretraining: two of get_preprocess_fn's
        # views stacked on channels (test_crop is off at 32 px and below),
        # one-hot labels.
        pair = [
            data_util.preprocess_image(
                image,
                size,
                size,
                is_training=True,
                color_jitter_strength=FLAGS.color_jitter_strength,
                test_crop=size > 32,
            )
            for _ in range(2)
        ]
        return tf.concat(pair, -1), tf.one_hot(label, NUM_CLASSES)

    order = step_indices(len(data["y"]), args.batch, args.steps, args.seed)
    order = order.reshape(-1)
    dataset = (
        tf.data.Dataset.from_tensor_slices((data["x"][order], data["y"][order]))
        .map(views, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch)
        .prefetch(2)
    )
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def train_step(iterator):
        def replica_step(features, labels):
            return single_step(features, labels)[0]

        return strategy.run(replica_step, next(iterator))

    def embed(images):
        # preprocess_for_eval without its crop: the images in [0, 1].
        x = tf.convert_to_tensor(images.astype("float32") / 255.0)
        return np.concatenate(
            [
                model.resnet_model(x[i : i + 500], training=False).numpy()
                for i in range(0, len(images), 500)
            ]
        )

    def step():
        accuracy_metric.reset_state()
        # SimCLR's code sums the two directions: eq. (1) is half of it.
        loss = float(train_step(iterator).numpy()) / 2
        return loss, float(accuracy_metric.result().numpy())

    return _run(args, data, step, embed, time.perf_counter())


def _ours_run(args):
    """Our short run of `--seed`: keras-ssl's step with its own views."""
    import time

    import keras
    import numpy as np

    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.recipes import stages

    data = load_images(args)
    size = args.image_size
    keras.utils.set_random_seed(args.seed)
    encoder = ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(size, size, 3),
    )
    head = ProjectionHead(num_layers=3, output_dim=128)
    model = _pretrainer(args, encoder, head, size)
    model.compile(
        optimizer=stages.lars(
            args.learning_rate,
            args.batch,
            "linear",
            args.steps,
            warmup_steps=run_settings(args)["warmup_steps"],
            weight_decay=args.weight_decay,
        )
    )
    order = iter(
        step_indices(len(data["y"]), args.batch, args.steps, args.seed)
    )

    def embed(images):
        x = images.astype("float32") / 255.0
        return np.asarray(encoder.predict(x, batch_size=500, verbose=0))

    def step():
        rows = next(order)
        logs = model.train_on_batch(
            data["x"][rows], data["y"][rows], return_dict=True
        )
        return float(logs["contrastive_loss"]), float(logs["probe_accuracy"])

    return _run(args, data, step, embed, time.perf_counter())


def _run(args, data, step, embed, start):
    """Runs `step` `--steps` times between two k-NN evaluations."""
    import time

    from parity_semppl import knn_accuracy

    def knn():
        return knn_accuracy(
            embed(data["x"]), data["y"], embed(data["test_x"]), data["test_y"]
        )

    before = knn()
    losses, accuracies, times = [], [], []
    for i in range(args.steps):
        times.append(time.perf_counter())
        loss, accuracy = step()
        losses.append(loss)
        accuracies.append(accuracy)
        if (i + 1) % args.window == 0:
            print(
                f"step {i + 1}: loss {loss:.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    times.append(time.perf_counter())
    return {
        "loss": losses,
        "probe_accuracy": accuracies,
        "knn_start": before,
        "knn": knn(),
        "seconds": time.perf_counter() - start,
        # Wall time a step after the first (which traces the step).
        "step_seconds": (times[-1] - times[1]) / max(1, args.steps - 1),
    }


def _runs_start(args):
    run = _reference_run if args.worker == "reference" else _ours_run

    def handle(request):
        return run(args)

    return {"ready": True}, handle


def summarize(args, results):
    """Markdown rows per side: loss windows, probe and k-NN, mean ± std
    over the seeds."""
    import numpy as np

    windows = loss_windows(list(range(1, args.steps + 1)), args.window)
    spans = [
        f"{i * args.window + 1}–{min((i + 1) * args.window, args.steps)}"
        for i in range(len(windows))
    ]
    lines = [
        "| side | seeds | NT-Xent, steps "
        + ", ".join(spans)
        + f" | probe, last {args.window} steps | k-NN before | k-NN after "
        "| s/step |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for side in args.side_list:
        rows = [r for r in results if r["side"] == side]
        if not rows:
            continue
        curves = np.array([loss_windows(r["loss"], args.window) for r in rows])
        cells = ", ".join(
            "{:.3f} ± {:.3f}".format(*mean_std(curves[:, i]))
            for i in range(curves.shape[1])
        )
        probe = [np.mean(r["probe_accuracy"][-args.window :]) for r in rows]
        stats = [
            "{:.1%} ± {:.1%}".format(*mean_std(values))
            for values in (
                probe,
                [r["knn_start"] for r in rows],
                [r["knn"] for r in rows],
            )
        ]
        seconds = np.mean([r["step_seconds"] for r in rows])
        lines.append(
            f"| {side} | {len(rows)} | {cells} | {' | '.join(stats)} | "
            f"{seconds:.2f} |"
        )
    return "\n".join(lines)


def short_runs(args, argv):
    """Every side's run of every seed, one at a time."""
    import time

    import numpy as np

    if "reference" in args.side_list:
        check_reference_python(args.reference_python)
    print("python " + " ".join([os.path.relpath(__file__), *argv]))
    print(machine())
    settings = run_settings(args)
    print(
        f"CIFAR ResNet-18 width {args.width:g}, {args.image_size} px, "
        f"{args.images} CIFAR-10 images, batch {args.batch}, {args.steps} "
        f"steps, LARS {args.learning_rate:g}·B/256 with "
        f"{settings['warmup_steps']} warm-up steps and cosine decay, weight "
        f"decay {args.weight_decay:g}, temperature {args.temperature:g}; "
        f"our NT-Xent: {args.contrastive_loss} of its two directions, our "
        f"probe on {args.probe_views} view(s)"
    )
    results = []
    for seed in args.seed_list:
        for side in args.side_list:
            started = time.perf_counter()
            worker = Worker(
                side, args, [*argv, "--seed", str(seed)], script=__file__
            )
            try:
                result = worker.ask("run", side)
            finally:
                worker.close()
            result.update(side=side, seed=seed)
            results.append(result)
            windows = loss_windows(result["loss"], args.window)
            print(
                f"{side:9s} seed={seed} NT-Xent (means of {args.window} "
                "steps) "
                + " ".join(f"{w:.3f}" for w in windows)
                + " | probe (last window) "
                f"{np.mean(result['probe_accuracy'][-args.window :]):.1%}"
                f" | k-NN {result['knn_start']:.1%} -> {result['knn']:.1%}"
                f" | {time.perf_counter() - started:.0f} s with the worker's "
                f"start ({result['step_seconds']:.2f} s a step after the "
                "first)",
                flush=True,
            )
    print()
    print(summarize(args, results))
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.short_runs and args.worker:
        return serve(lambda: _runs_start(args))
    if args.short_runs:
        return short_runs(args, argv)
    if args.worker == "reference":
        return serve(lambda: _reference_start(args))
    if args.worker == "ours":
        return serve(lambda: _ours_start(args))
    # The reference's environment, before anything starts.
    check_reference_python(args.reference_python)
    print("python " + " ".join([os.path.relpath(__file__), *argv]))
    print(machine())
    dtype = "float64" if args.float64 else "float32"
    print(
        f"CIFAR ResNet-18 width 1, 32 px, global batch {args.batch}, "
        f"{args.steps} steps, {dtype}; our NT-Xent: {args.contrastive_loss} "
        f"of its two directions, our probe on {args.probe_views} view(s)"
    )
    results = {}
    for case in args.cases:
        losses, rows, excluded = run_case(args, argv, case)
        results[case] = rows
        print(f"\n### {case}\n")
        print(
            "The reference's LARS excludes from decay and trust ratio: "
            + ", ".join(sorted({_short(n) for n in excluded}))
        )
        print(
            "losses (reference, ours): "
            + ", ".join(
                f"{losses[s - 1][0]:.4f}/{losses[s - 1][1]:.4f}"
                for s in args.compare
            )
            + f" after steps {args.compare}"
        )
        print(markdown(rows))
        last = rows[args.steps]
        above = [r for r in last if r[2] > args.show_above]
        if above:
            print(f"\nAbove {args.show_above:g} after {args.steps} steps:")
            for _, name, value in sorted(above, key=lambda r: -r[2]):
                print(f"  {name}: {value:.2e}")
    return results


if __name__ == "__main__":
    main()
