"""keras-ssl's PAWS step against suncet's own PyTorch step, weight by weight.

The reference is facebookresearch/suncet, imported from a checkout the
user names (nothing of it is copied here) and run in its own environment
(PyTorch, torchvision; on the CPU):

    git clone https://github.com/facebookresearch/suncet /path/to/suncet
    KERAS_BACKEND=tensorflow python benchmarks/parity_paws.py \\
        --suncet-dir /path/to/suncet --reference-python /path/to/torch/python

The reference worker builds suncet's network with `paws_train.init_model`
(a ResNet-50 of `src/resnet.py` with the 3-layer projection head `fc`
and the 2-layer prediction head `pred`), its optimizer with
`paws_train.init_opt` (its SGD of `src/sgd.py` inside the LARS wrapper
of `src/lars.py`, biases and parameters named `bn` excluded, and the
`WarmupCosineSchedule` of `src/utils.py` from `start_lr` to `ref_lr` and
down to `final_lr`), its loss with `init_paws_loss` (ME-MAX, multi-crop,
sharpening) and `make_labels_matrix` (label smoothing), and runs the body
of `paws_train.py`'s `train_step` (forward with `return_before_head`,
anchors from the prediction head, detached targets from the projections
with the two global views swapped, `loss = ploss + me_max`, backward,
LARS step, scheduler step) below its data pipeline, at world size 1 (no
process group: suncet's `AllGather` and `AllReduce` are then the
identity). Its initial weights are saved with `torch.save` in the layout
`paws_train.py` saves (`{"encoder": state_dict, "opt": ..., "epoch": 0,
...}`) and read on our side with `keras_ssl.pretrained.load_paws`: the
encoder, projection head and prediction head of a `PAWSPretrainer`.
`paws_train.py` imports `apex`, used only for synchronized BatchNorm on
several processes: the worker gives it an empty stand-in module. With
`--dtype float64` the worker builds `make_labels_matrix`'s rows in
float64 (it makes them with `torch.zeros` in the default dtype, and
float32 rows cast to float64 carry smoothed values rounded to float32).

Both sides get the same float tensors every step (NumPy, one seed): two
global 32-px views and `--multicrop` small 18-px crops of `--batch`
unlabeled images, and a class-balanced support batch (`--classes` ×
`--images-per-class` images, `--support-views` views each) ordered as
suncet's `ClassStratifiedSampler` orders it (image `i` of class
`i mod classes`), with those labels. Our step is `PAWSPretrainer`'s
`train_on_batch` with the views fed in place of its `Views` layers (the
way benchmarks/vs_simclr_tf2.py feeds SimCLR's views), under
`keras_ssl.optimizers.LARS` with a `WarmupCosineDecay` schedule.

After the steps named by `--compare` (default 1 and 20) the reference
saves its weights and its momentum buffers (as two state dicts of the
same layout), our side reads both with `load_paws` and prints, for every
weight and every momentum slot, the largest absolute difference over the
largest absolute reference value (`max|ours - ref| / max|ref|`). suncet's
buffers hold `-lr · step`; ours hold `+lr · step`: the sign is flipped
before comparing. `--resync` gives our side the reference's state
(weights, BatchNorm statistics, momentum slots, step counter) before each
compared step: float64 rounding grows by hundreds of times a step here
(docs/parity.md, PAWS), so only a step from the same state can be
compared after the first few.

What differs by design, each with a switch that aligns it (all aligned
by default):

- Warm-up start. suncet's schedule starts at `start_lr`; our
  `WarmupCosineDecay` warms up from 0. `--start-lr` > 0 is matched
  exactly by starting our optimizer's step counter at
  `k0 = W · s / (r - s)` with a warm-up of `W + k0` steps and a horizon of
  `T + k0` (W, T: the reference's warm-up and total steps, s and r its
  start and peak rates; `k0` must be whole).
- LARS exclusions (`--lars-exclusions`). suncet excludes parameters
  whose name holds `bias` or `bn`, which misses the BatchNorm scale of
  each shortcut (`downsample.1.weight`): that one is decayed and
  adapted. Ours excludes every rank-1 variable. `reference` (default)
  gives our LARS suncet's rule; `ours` keeps ours.
- LARS trust ratio with weight decay. suncet divides by
  `||g|| + wd·||w|| + 1e-8`, ours (SimCLR's) by `||g + wd·w||`. They agree
  when `--weight-decay` is 0 (default here; the paper's is 1e-6).
- LARS trust ratio's guard (`--trust-epsilon`). suncet adds `eps = 1e-8`
  to the norm it divides by; ours adds nothing (a zero norm takes the
  plain rate instead). With gradient norms of 1e-3 to 1e-2 that moves
  each step by 1e-6 to 1e-5 relative, which float64 shows. `0` (default)
  sets the reference's `eps` to 0; `reference` keeps its 1e-8.
- Learning rate's precision (`--reference-rate`). Our
  `WarmupCosineDecay`, like Keras's own schedules, computes the rate in
  float32 whatever the model's dtype; suncet's schedule in Python floats.
  In float64 that scales every step by up to 1e-6 relative (0.08 rounds
  to float32 by 2.2e-8; the cosine part is up to 9.6e-7 off the exact
  rate), which moves the loss after the first update by 1e-6. `ours`
  (default) runs the reference's step at our rate (its own rate is still
  printed next to ours); `reference` keeps its own.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REFERENCE_FILES = (
    "src/paws_train.py",
    "src/losses.py",
    "src/lars.py",
    "src/sgd.py",
    "src/utils.py",
    "src/resnet.py",
    "src/wide_resnet.py",
    "src/data_manager.py",
)
REFERENCE_PACKAGES = ("torch", "torchvision")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GLOBAL_SIZE = 32
SMALL_SIZE = 18


def check_suncet_dir(path):
    """The root of a facebookresearch/suncet checkout at `path`.

    Raises:
        ValueError: if `path` is not given or lacks a file this benchmark
            imports (all of them named).
    """
    if not path:
        raise ValueError(
            "`--suncet-dir` must name a checkout of facebookresearch/suncet "
            "(the directory holding `src/`)."
        )
    root = os.path.abspath(path)
    missing = [
        name
        for name in REFERENCE_FILES
        if not os.path.isfile(os.path.join(root, name))
    ]
    if missing:
        raise ValueError(
            f"`--suncet-dir` must hold suncet's code, but {root} lacks "
            f"{', '.join(missing)}. Received: suncet_dir={path!r}"
        )
    return root


def check_reference_python(python, packages=REFERENCE_PACKAGES):
    """Checks that the interpreter `python` runs and can import `packages`.

    Raises:
        ValueError: naming the interpreter and every missing package.
    """
    probe = (
        "import importlib.util, sys; print(','.join(p for p in sys.argv[1:] "
        "if importlib.util.find_spec(p) is None))"
    )
    try:
        result = subprocess.run(
            [python, "-c", probe, *packages],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as error:
        raise ValueError(
            f"`--reference-python` must be a Python interpreter with "
            f"{', '.join(packages)}; running it failed ({error}). Received: "
            f"reference_python={python!r}"
        ) from None
    if result.returncode:
        raise ValueError(
            f"`--reference-python` failed to run (status "
            f"{result.returncode}): {result.stderr.strip()[-300:]}. "
            f"Received: reference_python={python!r}"
        )
    missing = [p for p in result.stdout.strip().split(",") if p]
    if missing:
        raise ValueError(
            f"The reference environment lacks {', '.join(missing)} (PAWS's "
            f"reference code needs {', '.join(packages)}; install it there, "
            f"e.g. `{python} -m pip install {' '.join(missing)}`). "
            f"Received: reference_python={python!r}"
        )


def warmup_offset(args):
    """`k0`: the step our schedule starts at to match `start_lr` (see
    the module's docstring)."""
    if args.start_lr == 0:
        return 0
    offset = args.warmup * args.start_lr / (args.ref_lr - args.start_lr)
    if abs(offset - round(offset)) > 1e-9:
        raise ValueError(
            "`--warmup` * start_lr / (ref_lr - start_lr) must be whole, so "
            "that our schedule can match the reference's start. Received: "
            f"warmup={args.warmup}, start_lr={args.start_lr}, "
            f"ref_lr={args.ref_lr}"
        )
    return int(round(offset))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--suncet-dir", help="a facebookresearch/suncet checkout"
    )
    parser.add_argument(
        "--reference-python",
        default=sys.executable,
        help="interpreter with PyTorch and torchvision for the reference",
    )
    parser.add_argument("--compare", default="1,20", help="steps to compare at")
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--multicrop", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--images-per-class", type=int, default=2)
    parser.add_argument("--support-views", type=int, default=2)
    parser.add_argument("--output-dim", type=int, default=128)
    parser.add_argument("--ref-lr", type=float, default=3.2)
    parser.add_argument("--start-lr", type=float, default=0.8)
    parser.add_argument("--final-lr", type=float, default=0.032)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--total-steps", type=int, default=30)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--lars-exclusions", choices=("reference", "ours"), default="reference"
    )
    parser.add_argument(
        "--trust-epsilon", choices=("0", "reference"), default="0"
    )
    parser.add_argument(
        "--reference-rate", choices=("ours", "reference"), default="ours"
    )
    parser.add_argument(
        "--resync",
        action="store_true",
        help="before each compared step, give our side the reference's "
        "state (weights, statistics, momentum) after the step before: each "
        "compared step then starts from the same state",
    )
    parser.add_argument("--no-me-max", dest="me_max", action="store_false")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the checkpoints go")
    parser.add_argument("--worker", choices=("reference",))
    args = parser.parse_args(argv)
    try:
        args.compare = sorted({int(s) for s in args.compare.split(",")})
    except ValueError:
        raise ValueError(
            "`--compare` must be comma-separated step counts. Received: "
            f"compare={args.compare!r}"
        ) from None
    checks = {
        "batch": args.batch >= 2,
        "multicrop": args.multicrop >= 0,
        "classes": args.classes >= 2,
        "images_per_class": args.images_per_class >= 1,
        "support_views": args.support_views in (1, 2),
        "compare": args.compare[0] >= 1,
        "ref_lr": args.ref_lr > 0,
        "start_lr": 0 <= args.start_lr < args.ref_lr,
        "warmup": 0 <= args.warmup < args.total_steps,
        "total_steps": args.total_steps >= args.compare[-1],
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(
            "Bad arguments: "
            + ", ".join(f"{name}={getattr(args, name)!r}" for name in bad)
            + " (batch >= 2, classes >= 2, support_views 1 or 2, compare "
            ">= 1, 0 <= start_lr < ref_lr, warmup < total_steps >= the "
            "last compared step)"
        )
    args.offset = warmup_offset(args)
    if not args.worker:
        args.suncet_root = check_suncet_dir(args.suncet_dir)
    return args


def step_data(args, step):
    """The views, support views and support labels of step `step`."""
    import numpy as np

    rng = np.random.default_rng([args.seed, step])
    shape = (args.batch, GLOBAL_SIZE, GLOBAL_SIZE, 3)
    support_rows = args.classes * args.images_per_class
    return {
        "global": [rng.random(shape, dtype="float32") for _ in range(2)],
        "small": [
            rng.random((args.batch, SMALL_SIZE, SMALL_SIZE, 3), dtype="float32")
            for _ in range(args.multicrop)
        ],
        "support": [
            rng.random(
                (support_rows, GLOBAL_SIZE, GLOBAL_SIZE, 3), dtype="float32"
            )
            for _ in range(args.support_views)
        ],
        # suncet's ClassStratifiedSampler order: image i is of class
        # i mod classes (make_labels_matrix builds its rows so).
        "labels": np.arange(support_rows, dtype="int32") % args.classes,
    }


# === Reference worker (PyTorch) ===


class _Reference:
    def __init__(self, args):
        import logging
        import types

        import torch

        sys.path.insert(0, args.suncet_dir)
        # Only `main` uses apex (synchronized BN on several processes).
        sys.modules.setdefault("apex", types.ModuleType("apex"))
        import src.paws_train as paws_train
        from src.losses import init_paws_loss
        from src.losses import make_labels_matrix

        logging.getLogger().setLevel(logging.WARNING)
        self.torch = torch
        self.args = args
        self.dtype = getattr(torch, args.dtype)
        torch.manual_seed(args.seed)
        self.encoder = paws_train.init_model(
            device=torch.device("cpu"),
            model_name="resnet50",
            use_pred=True,
            output_dim=args.output_dim,
        ).to(self.dtype)
        self.encoder.train()
        # Iterations per epoch 1: `warmup` and `num_epochs` count steps.
        self.encoder, self.optimizer, self.scheduler = paws_train.init_opt(
            encoder=self.encoder,
            iterations_per_epoch=1,
            start_lr=args.start_lr,
            ref_lr=args.ref_lr,
            ref_mom=0.9,
            nesterov=False,
            warmup=args.warmup,
            num_epochs=args.total_steps,
            weight_decay=args.weight_decay,
            final_lr=args.final_lr,
        )
        if args.trust_epsilon == "0":
            # suncet's LARS wrapper divides by `||g|| + eps` (1e-8); ours
            # by `||g||`.
            self.optimizer.eps = 0.0
        self.paws = init_paws_loss(
            multicrop=args.multicrop, tau=0.1, T=0.25, me_max=args.me_max
        )
        # make_labels_matrix builds its rows with `torch.zeros` in the
        # default dtype: in float32 its smoothed values (0.925, 0.025) would
        # reach a float64 step rounded to float32.
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            self.labels = make_labels_matrix(
                num_classes=args.classes,
                s_batch_size=args.images_per_class,
                world_size=1,
                device=torch.device("cpu"),
                unique_classes=False,
                smoothing=args.label_smoothing,
            )
        finally:
            torch.set_default_dtype(default_dtype)
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=self.dtype)[:, None, None]
        self.std = torch.tensor(IMAGENET_STD, dtype=self.dtype)[:, None, None]
        self.steps = 0

    def _images(self, array):
        # NHWC in [0, 1] -> NCHW normalised, as suncet's transforms give.
        x = self.torch.from_numpy(array).to(self.dtype).permute(0, 3, 1, 2)
        return ((x - self.mean) / self.std).contiguous()

    def step(self, lr=None):
        """One step; at the learning rate `lr` when given (the scheduler's
        own rate is reported as `own_lr` either way)."""
        args, torch = self.args, self.torch
        own_lr = self.optimizer.param_groups[0]["lr"]
        if lr is not None:
            # The scheduler sets every group's rate again after the step.
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        data = step_data(args, self.steps)
        simgs = [self._images(x) for x in data["support"]]
        uimgs = [self._images(x) for x in data["global"] + data["small"]]
        labels = torch.cat([self.labels for _ in range(args.support_views)])
        self.steps += 1
        result = reference_step(
            self.encoder,
            self.optimizer,
            self.scheduler,
            self.paws,
            simgs,
            uimgs,
            labels,
            args.batch,
        )
        result["own_lr"] = float(own_lr)
        return result

    def save(self, path):
        """Weights in `paws_train.py`'s layout, and the momentum buffers
        in the same layout (`path` with `-momentum` before `.pth.tar`)."""
        torch = self.torch
        state = self.encoder.state_dict()
        torch.save(
            {
                "encoder": state,
                "opt": self.optimizer.state_dict(),
                "epoch": self.steps,
                "loss": 0.0,
                "s_batch_size": self.args.images_per_class,
                "u_batch_size": self.args.batch,
                "world_size": 1,
                "lr": self.args.ref_lr,
                "temperature": 0.1,
                "amp": {},
            },
            path,
        )
        buffers = dict(state)
        for name, parameter in self.encoder.named_parameters():
            slot = self.optimizer.state[parameter].get("momentum_buffer")
            buffers[name] = (
                torch.zeros_like(parameter) if slot is None else slot
            ).detach()
        momentum_path = path.replace(".pth.tar", "-momentum.pth.tar")
        torch.save({"encoder": buffers}, momentum_path)
        return {"weights": path, "momentum": momentum_path}


def reference_step(
    encoder,
    optimizer,
    scheduler,
    paws,
    simgs,
    uimgs,
    labels,
    batch,
    entropy_loss=None,
):
    """One step of `paws_train.py`'s `train_step` (use_fp16=False).

    `simgs`: the support views (one tensor per view), `uimgs`: the two
    global views then the small crops, `labels`: the label matrix of the
    support views. `entropy_loss`: optionally a PAWS loss with ME-MAX, to
    report `H(p_bar)` when `paws` has it off.
    """
    import torch

    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad()
    h, z = encoder(simgs + uimgs, return_before_head=True)
    num_support = len(labels)
    anchor_supports = z[:num_support]
    anchor_views = z[num_support:]
    target_supports = h[:num_support].detach()
    target_views = h[num_support:].detach()
    target_views = torch.cat(
        [target_views[batch : 2 * batch], target_views[:batch]], dim=0
    )
    inputs = dict(
        anchor_views=anchor_views,
        anchor_supports=anchor_supports,
        anchor_support_labels=labels,
        target_views=target_views,
        target_supports=target_supports,
        target_support_labels=labels,
    )
    ploss, me_max = paws(**inputs)
    loss = ploss + me_max
    if torch.is_tensor(me_max):
        me_max = me_max.detach()
    entropy = -float(me_max)
    if entropy_loss is not None:
        with torch.no_grad():
            entropy = -float(entropy_loss(**inputs)[1])
    loss.backward()
    optimizer.step()
    scheduler.step()
    return {
        "loss": float(loss.detach()),
        "cross_entropy": float(ploss.detach()),
        "me_max": float(me_max),
        "entropy": entropy,
        "lr": float(lr),
    }


def worker(args):
    """Serves the reference over stdin/stdout: one JSON line per request."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    reference = _Reference(args)
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request["command"] == "step":
            reply = reference.step(request.get("lr"))
        else:
            reply = reference.save(request["path"])
        channel.write(json.dumps(reply) + "\n")


class Worker:
    def __init__(self, args, argv):
        env = dict(os.environ)
        self.process = subprocess.Popen(
            [
                args.reference_python,
                os.path.abspath(__file__),
                *argv,
                "--worker",
                "reference",
                "--suncet-dir",
                args.suncet_root,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"The reference worker exited (status {self.process.wait()});"
                " its error is above."
            )
        return json.loads(line)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# === Ours (Keras) ===


def _reference_exclusions():
    # suncet's rule on our variable paths: biases, every BatchNorm offset,
    # and the BatchNorm scales of layers whose torch name holds "bn" (ours:
    # `..._bn1`, `bn2`, ...). The shortcut BatchNorm (`downsample.1`,
    # ours `..._shortcut_bn`) keeps its scale decayed and adapted.
    return [r"/bias$", r"/beta$", r"bn\d/gamma$"]


class _Ours:
    def __init__(self, args, init_path):
        import keras

        import keras_ssl
        from keras_ssl.layers import Views
        from keras_ssl.models import PAWSPretrainer
        from keras_ssl.pretrained import load_paws

        keras.config.set_dtype_policy(args.dtype)
        keras.config.set_floatx(args.dtype)
        self.args = args
        loaded = load_paws(init_path)
        self.model = PAWSPretrainer(
            loaded.encoder,
            num_classes=args.classes,
            head=loaded.head,
            prediction_head=loaded.predictor,
            views=Views.from_preset("paws_cifar", size=GLOBAL_SIZE),
            support_views=args.support_views,
            label_smoothing=args.label_smoothing,
            me_max=args.me_max,
        )
        offset = args.offset
        schedule = keras_ssl.optimizers.WarmupCosineDecay(
            args.ref_lr,
            total_steps=args.total_steps + offset,
            warmup_steps=args.warmup + offset,
            end_learning_rate=args.final_lr,
        )
        exclusions = {}
        if args.lars_exclusions == "reference":
            exclusions = {
                "exclude_rank_1": False,
                "exclude_from_weight_decay": _reference_exclusions(),
            }
        self.optimizer = keras_ssl.optimizers.LARS(
            schedule,
            momentum=0.9,
            weight_decay=args.weight_decay,
            eeta=0.001,
            **exclusions,
        )
        self.model.compile(optimizer=self.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.optimizer.iterations.assign(offset)
        self.steps = 0

    def _feed(self, layer, images, training=True):
        # The views come made: stacked on channels, small crops in the
        # top-left corner of a 32-px canvas.
        from keras import ops

        if layer is self.model.support_augment:
            count = self.args.support_views
            return [images[..., 3 * i : 3 * i + 3] for i in range(count)]
        views = [images[..., 3 * i : 3 * i + 3] for i in range(2)]
        for i in range(2, 2 + self.args.multicrop):
            views.append(images[:, :SMALL_SIZE, :SMALL_SIZE, 3 * i : 3 * i + 3])
        return [ops.convert_to_tensor(v) for v in views]

    def rate(self):
        """The learning rate of our next step, as a Python float."""
        return float(self.optimizer.learning_rate)

    def step(self):
        import numpy as np

        from keras_ssl.models import paws_pretrainer

        data = step_data(self.args, self.steps)
        canvas = np.zeros(
            (self.args.batch, GLOBAL_SIZE, GLOBAL_SIZE, 3), "float32"
        )
        small = []
        for crop in data["small"]:
            padded = canvas.copy()
            padded[:, :SMALL_SIZE, :SMALL_SIZE] = crop
            small.append(padded)
        batch = {
            "unlabeled": np.concatenate(data["global"] + small, axis=-1),
            "support": np.concatenate(data["support"], axis=-1),
            "support_labels": data["labels"],
        }
        lr = self.rate()
        original = paws_pretrainer.compiled_call
        paws_pretrainer.compiled_call = self._feed
        try:
            logs = self.model.train_on_batch(batch, return_dict=True)
        finally:
            paws_pretrainer.compiled_call = original
        self.steps += 1
        return {
            "loss": float(logs["loss"]),
            "cross_entropy": float(logs["cross_entropy"]),
            "me_max": -float(logs["me_max"]) if self.args.me_max else 0.0,
            "lr": lr,
        }

    def parts(self, model):
        """Our pretrainer's or a `PretrainedModel`'s three parts."""
        predictor = getattr(model, "predictor", None)
        if predictor is None:
            predictor = model.prediction_head
        return {
            "encoder": model.encoder,
            "head": model.head,
            "prediction_head": predictor,
        }

    def _paired(self, paths):
        """`(name, variable, reference value, our momentum slot or None,
        reference slot)` for every variable, from the reference's
        checkpoints `paths` (its slot with our sign: suncet's buffer holds
        -lr·step, ours +lr·step)."""
        import numpy as np

        from keras_ssl.pretrained import load_paws

        weights = load_paws(paths["weights"])
        momentum = load_paws(paths["momentum"])
        for part, layer in self.parts(self.model).items():
            theirs = self.parts(weights)[part]
            slots = self.parts(momentum)[part]
            for mine, ref, slot in zip(
                layer.weights, theirs.weights, slots.weights
            ):
                ours_slot = None
                if mine.trainable:
                    index = self.optimizer._get_variable_index(mine)
                    ours_slot = self.optimizer._momentums[index]
                yield (
                    f"{part}/{mine.path}",
                    mine,
                    np.asarray(ref.numpy(), "float64"),
                    ours_slot,
                    -np.asarray(slot.numpy(), "float64"),
                )

    def compare(self, paths):
        """Rows `(kind, path, relative difference)` for every weight and
        every momentum slot against the reference's checkpoints."""
        import numpy as np

        rows = []
        for name, mine, ref, slot, ref_slot in self._paired(paths):
            kind = "weight" if mine.trainable else "statistic"
            a = np.asarray(mine.numpy(), "float64")
            rows.append((kind, name, _relative(a, ref)))
            if slot is not None:
                v = np.asarray(slot.numpy(), "float64")
                rows.append(("momentum", name, _relative(v, ref_slot)))
        return rows

    def resync(self, paths, steps):
        """Takes the reference's state after `steps` steps (its
        checkpoints `paths`): weights, BatchNorm statistics, momentum
        slots, and the step counter."""
        for _, mine, ref, slot, ref_slot in self._paired(paths):
            mine.assign(ref.astype(mine.dtype))
            if slot is not None:
                slot.assign(ref_slot.astype(slot.dtype))
        self.skip_to(steps)

    def skip_to(self, steps):
        """Moves the step counter and the data to step `steps` without
        training."""
        self.optimizer.iterations.assign(self.args.offset + steps)
        self.steps = steps


def _relative(a, b):
    """`max|a - b| / max|b|`; 0 when both are 0."""
    import numpy as np

    scale = float(np.max(np.abs(b))) if b.size else 0.0
    error = float(np.max(np.abs(a - b))) if b.size else 0.0
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale


def summarise(rows):
    """The largest relative difference per kind and its weight."""
    worst = {}
    for kind, path, value in rows:
        if kind not in worst or value > worst[kind][1]:
            worst[kind] = (path, value)
    return worst


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    check_reference_python(args.reference_python)
    workdir = args.workdir or tempfile.mkdtemp(prefix="parity_paws_")
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    reference = Worker(args, argv)
    results = {}
    try:
        init = reference.ask(
            command="save", path=os.path.join(workdir, "init.pth.tar")
        )
        ours = _Ours(args, init["weights"])
        losses = []
        for step in range(1, args.compare[-1] + 1):
            ours_steps = not args.resync or step in args.compare
            if args.resync and ours_steps and step > 1:
                path = os.path.join(workdir, f"step{step - 1}.pth.tar")
                ours.resync(reference.ask(command="save", path=path), step - 1)
            rate = ours.rate() if args.reference_rate == "ours" else None
            theirs = reference.ask(command="step", lr=rate)
            if ours_steps:
                mine = ours.step()
            else:
                ours.skip_to(step)
                mine = {key: float("nan") for key in ("loss", "me_max", "lr")}
            losses.append((step, theirs, mine))
            print(
                f"step {step}: loss {theirs['loss']:.8f} (reference), "
                f"{mine['loss']:.8f} (ours)",
                file=sys.stderr,
                flush=True,
            )
            if step in args.compare:
                path = os.path.join(workdir, f"step{step}.pth.tar")
                results[step] = ours.compare(
                    reference.ask(command="save", path=path)
                )
    finally:
        reference.close()
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"losses": losses, "results": results}, f)
    _print_report(args, losses, results, time.perf_counter() - start)
    return results


def _print_report(args, losses, results, seconds):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from alternate import machine

    print(machine())
    print(
        f"{args.dtype}; ResNet-50 (suncet layout) + projection head "
        f"(2048-2048-{args.output_dim}) + prediction head; batch "
        f"{args.batch}, 2 x {GLOBAL_SIZE} px + {args.multicrop} x "
        f"{SMALL_SIZE} px views, support {args.classes} classes x "
        f"{args.images_per_class} images x {args.support_views} views; LARS "
        f"lr {args.start_lr:g} -> {args.ref_lr:g} over {args.warmup} steps, "
        f"cosine to {args.final_lr:g} at {args.total_steps}; weight decay "
        f"{args.weight_decay:g}; LARS exclusions {args.lars_exclusions}; "
        f"reference trust epsilon {args.trust_epsilon}; reference rate "
        f"{args.reference_rate}; "
        f"{'resynchronised before each compared step; ' if args.resync else ''}"
        f"ME-MAX {'on' if args.me_max else 'off'}; {seconds:.0f} s"
    )
    print(
        "| step | lr ref's own / ref's applied / ours | loss ref | loss ours "
        "| me_max ref | ours |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for step, theirs, mine in losses:
        print(
            f"| {step} | {theirs['own_lr']:.10g} / {theirs['lr']:.10g} / "
            f"{mine['lr']:.10g} | "
            f"{theirs['loss']:.8f} | {mine['loss']:.8f} | "
            f"{theirs['me_max']:.8f} | {mine['me_max']:.8f} |"
        )
    for step, rows in results.items():
        print(f"\nAfter {step} step(s): max|ours - ref| / max|ref|")
        for kind, (path, value) in summarise(rows).items():
            print(f"  worst {kind}: {value:.3e} ({path})")
        for kind, path, value in rows:
            print(f"  {kind:9s} {path}: {value:.3e}")


if __name__ == "__main__":
    main()
