"""SimCLRv2's MoCo memory against MoCo's own momentum encoder and queue.

The reference is facebookresearch/moco's `moco/builder.py` (PyTorch),
imported from a checkout the user names (nothing of it is copied here):

    git clone https://github.com/facebookresearch/moco /path/to/moco
    python benchmarks/parity_moco_memory.py --moco-dir /path/to/moco \\
        --reference-python /path/to/venv-with-torch/bin/python

MoCo runs in its own worker process on the CPU, in the interpreter
`--reference-python` names, under a gloo process group of world size 1 on
127.0.0.1 (its `concat_all_gather` and shuffled BatchNorm need one).
`builder.py` moves two index tensors to the GPU with `.cuda()`; the worker
makes `Tensor.cuda` return the tensor itself, so they stay on the CPU (the
checkout is not modified). keras-ssl's `SimCLRv2Pretrainer` runs in a
second worker. The parent drives both over pipes, one step at a time;
arrays travel through `.npy` files in a temporary folder.

The network on both sides is the same small one, built from the same
weights (the reference's initial weights, copied with NumPy): 3x3
convolutions without bias, each followed by BatchNorm (epsilon 1e-5,
momentum 0.1 in PyTorch's convention) and ReLU, the first at stride 1 and
the others at stride 2 (padding 1 on both sides), global average pooling,
then MoCo v2's projection head (`mlp=True`: Linear, ReLU, Linear, with
biases) as keras-ssl's `ProjectionHead(num_layers=2, use_bias=True,
batch_norm=False)`.

Two modes (`--mode`):

- `parity`: the same random views, the same initial queue, both sides
  step by step with plain SGD with momentum (`--optimizer lars`: LARS,
  PyTorch's written here from its update rule), and the parent compares
  after step 1 and step `--steps`: the online network's weights, the
  optimizer's velocities, the momentum network's weights, the queue
  (l2-normalised rows) and its pointer, and the loss. To align the
  designs, the reference's `MoCo.forward` gets both views stacked as its
  query images and as its key images (so its key encoder sees what
  ours sees with `memory_views=2`), its queue before the step and its
  query encoder's output are taken, and the gradient comes from NT-Xent
  over them written here from SimCLR's eq. (1); our queue starts with
  MoCo's random keys, all marked valid.
- `runs`: short trainings side by side on CIFAR-10 images at the small
  presets' rate (LARS 8.0·B/256, 5% warm-up then cosine decay, weight
  decay 1e-6, temperature 0.5, batch 256, 4,096 keys at EMA 0.999 with
  both views keyed), memory on and off on each side, several seeds, the
  same views for all four: `reference_memory` (MoCo's `forward`: its EMA
  update, shuffled BatchNorm, queue; NT-Xent over the queue),
  `reference_off` (MoCo's query encoder alone, NT-Xent), `ours_memory`
  (image ids fed, as the recipes do) and `ours_off`. It prints loss
  curves, the memory's intermediate quantities at a few steps, and the
  k-NN accuracy (k = 200, tau = 0.1, cosine, weighted votes) of the
  encoder output at the end. `--run-image-size 16` averages the images
  down to 16 px (a quarter of the convolutions' cost). Each process
  draws every step's views itself from the seed (`StepViews`); the
  parent checks their checksums.

Prints the command, the machine and markdown tables.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import machine  # noqa: E402

REFERENCE_FILES = ("moco/__init__.py", "moco/builder.py")
RUNS = ("reference_memory", "reference_off", "ours_memory", "ours_off")


def check_moco_dir(path):
    """The absolute path of a facebookresearch/moco checkout.

    Raises:
        ValueError: if `path` is not given or lacks one of the files this
            benchmark imports.
    """
    if not path:
        raise ValueError(
            "`--moco-dir` must name a checkout of facebookresearch/moco "
            "(the directory holding `moco/builder.py`)."
        )
    path = os.path.abspath(path)
    missing = [
        name
        for name in REFERENCE_FILES
        if not os.path.isfile(os.path.join(path, name))
    ]
    if missing:
        raise ValueError(
            f"`--moco-dir` must hold MoCo's code, but {path} lacks "
            f"{', '.join(missing)}. Received: moco_dir={path!r}"
        )
    return path


def import_torch():
    """PyTorch, or an `ImportError` that names the package to install."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "The MoCo reference needs PyTorch (package `torch`), which "
            f"{sys.executable} cannot import ({error}). Install it there "
            "(`pip install torch`) or name an interpreter that has it with "
            "`--reference-python`."
        ) from error
    return torch


def _int_list(text):
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moco-dir", help="a facebookresearch/moco checkout")
    parser.add_argument(
        "--reference-python",
        default=sys.executable,
        help="interpreter with PyTorch for the reference",
    )
    parser.add_argument("--mode", choices=("parity", "runs"), default="parity")
    parser.add_argument("--widths", type=_int_list, default=[16, 32, 64])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    # Parity.
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queue", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2**-5,
        help="MoCo's 0.03, rounded to a power of two: exact in float32, "
        "the dtype of Keras's learning-rate variable",
    )
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32"
    )
    # Runs.
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument(
        "--run-image-size",
        type=int,
        choices=(8, 16, 32),
        default=32,
        help="CIFAR-10 at 32 px, or averaged down to 16 or 8 px",
    )
    parser.add_argument("--run-batch", type=int, default=256)
    parser.add_argument("--run-steps", type=int, default=200)
    parser.add_argument("--run-queue", type=int, default=4096)
    parser.add_argument("--run-ema", type=float, default=0.999)
    parser.add_argument("--run-learning-rate", type=float, default=8.0)
    parser.add_argument("--weight-decay", type=float, default=1e-6)
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2])
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--worker", choices=("ours", "reference"))
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _check_args(args)
    if args.worker != "ours":
        args.moco_dir = check_moco_dir(args.moco_dir)
    return args


def _check_args(args):
    positive = {
        "batch": args.batch,
        "queue": args.queue,
        "steps": args.steps,
        "dim": args.dim,
        "image_size": args.image_size,
        "images": args.images,
        "test_images": args.test_images,
        "run_batch": args.run_batch,
        "run_steps": args.run_steps,
        "run_queue": args.run_queue,
        "probe_every": args.probe_every,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(
                f"`--{name.replace('_', '-')}` must be >= 1. Received: "
                f"{name}={value}"
            )
    if args.image_size % 4:
        raise ValueError(
            "`--image-size` must be a multiple of 4 (the parity views' "
            f"4x4 cells). Received: image_size={args.image_size}"
        )
    if not args.widths or min(args.widths) < 1:
        raise ValueError(
            "`--widths` must be a comma-separated list of ints >= 1. "
            f"Received: widths={args.widths}"
        )
    # MoCo asserts that the keys of a step divide its queue.
    for queue, batch, name in (
        (args.queue, args.batch, "queue"),
        (args.run_queue, args.run_batch, "run_queue"),
    ):
        if queue % (2 * batch):
            raise ValueError(
                f"`--{name.replace('_', '-')}` must be a multiple of the "
                f"2·batch keys of a step (MoCo asserts it). Received: "
                f"{name}={queue}, keys per step={2 * batch}"
            )
    for name in ("ema", "run_ema"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ValueError(
                f"`--{name.replace('_', '-')}` must be in [0, 1). "
                f"Received: {name}={getattr(args, name)}"
            )
    names = args.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown or not names:
        raise ValueError(
            f"`--runs` must name some of {', '.join(RUNS)}. Received: "
            f"runs={args.runs!r}"
        )
    args.runs = names


def learning_rate(args, step):
    """LARS's rate at `step` (0-based): 8.0·B/256 by default, warmed up
    linearly over 5% of the steps, then cosine-decayed to 0."""
    if args.mode == "parity":
        return args.learning_rate
    peak = args.run_learning_rate * args.run_batch / 256
    warmup = max(1, round(0.05 * args.run_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, args.run_steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


# === Views (NumPy, shared by both sides) ===


def augment(images, rng):
    """SimCLR-style CIFAR views in NumPy: a random resized crop (scale
    0.08-1, ratio 3/4-4/3, nearest neighbour), a horizontal flip, colour
    jitter of strength 0.5 with probability 0.8 (brightness, contrast,
    saturation) and greyscale with probability 0.2. uint8 in, float32 in
    [0, 1] out."""
    import numpy as np

    n, size = images.shape[0], images.shape[1]
    area = rng.uniform(0.08, 1.0, n) * size * size
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    h = np.clip(np.round(np.sqrt(area / ratio)), 1, size).astype(int)
    w = np.clip(np.round(np.sqrt(area * ratio)), 1, size).astype(int)
    top = (rng.random(n) * (size - h + 1)).astype(int)
    left = (rng.random(n) * (size - w + 1)).astype(int)
    grid = (np.arange(size) + 0.5) / size
    rows = top[:, None] + (grid[None, :] * h[:, None]).astype(int)
    cols = left[:, None] + (grid[None, :] * w[:, None]).astype(int)
    flip = rng.random(n) < 0.5
    cols[flip] = cols[flip, ::-1]
    x = images[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    x = x.astype("float32") / 255.0
    jitter = rng.random(n) < 0.8
    s = 0.5
    b = 1 + rng.uniform(-0.8 * s, 0.8 * s, n)
    c = 1 + rng.uniform(-0.8 * s, 0.8 * s, n)
    sat = 1 + rng.uniform(-0.8 * s, 0.8 * s, n)
    grey = (x @ np.array([0.299, 0.587, 0.114], "float32"))[..., None]
    mean = grey.mean(axis=(1, 2, 3), keepdims=True)
    jittered = x * b[:, None, None, None]
    jittered = (jittered - mean) * c[:, None, None, None] + mean
    g2 = (jittered @ np.array([0.299, 0.587, 0.114], "float32"))[..., None]
    jittered = (jittered - g2) * sat[:, None, None, None] + g2
    x = np.where(jitter[:, None, None, None], jittered, x)
    to_grey = rng.random(n) < 0.2
    g3 = (x @ np.array([0.299, 0.587, 0.114], "float32"))[..., None]
    x = np.where(to_grey[:, None, None, None], np.repeat(g3, 3, -1), x)
    return np.clip(x, 0.0, 1.0).astype("float32")


def parity_views(rng, batch, size):
    """Two views of `batch` synthetic images, stacked: (2·batch, size,
    size, 3) float32 in [0, 1].

    Each image is its own coarse random pattern (4x4 cells); each view adds
    its own pixel noise. Images that differ give projections that differ,
    so the gradients are not a small difference of large terms (as they
    are with pure noise for every view, which all look alike to the
    network). float32 values, exact in float64 too: our step takes its
    images as float32 (`to_float_images`).
    """
    import numpy as np

    cells = max(1, size // 4)
    base = rng.random((batch, cells, cells, 3), dtype="float32")
    base = np.repeat(np.repeat(base, size // cells, 1), size // cells, 2)
    noise = rng.normal(0.0, 0.15, (2, batch, size, size, 3))
    views = np.clip(base[None] + noise.astype("float32"), 0.0, 1.0)
    return views.reshape((2 * batch, size, size, 3)).astype("float32")


# === NumPy references (SimCLR eq. 1; MoCo eq. 1), float64 ===


def _normalize(x):
    import numpy as np

    x = np.asarray(x, "float64")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nt_xent_probabilities(z, temperature, queue=None, mask=None):
    """Each anchor's softmax over its NT-Xent candidates, and the loss.

    `z` is (2B, D), both views stacked; `queue` (K, D) adds negatives,
    `mask` (K,) or (2B, K) keeps them. Returns `(loss, probabilities,
    positive_index, queue_columns)`: probabilities (2B, 2B + K) over
    [all 2B projections (self excluded) | queue].
    """
    import numpy as np

    a = _normalize(z)
    n2 = a.shape[0]
    b = n2 // 2
    logits = a @ a.T / temperature
    np.fill_diagonal(logits, -np.inf)
    if queue is not None:
        q = a @ _normalize(queue).T / temperature
        if mask is not None:
            m = np.broadcast_to(np.asarray(mask, bool), q.shape)
            q = np.where(m, q, -np.inf)
        logits = np.concatenate([logits, q], axis=1)
    positive = np.concatenate([np.arange(b, n2), np.arange(b)])
    top = logits.max(axis=1, keepdims=True)
    p = np.exp(logits - top)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n2), positive]))
    return loss, p, positive, n2


def moco_loss(q, k, queue, temperature):
    """MoCo's InfoNCE: each query against its key and the queue's keys."""
    import numpy as np

    q, k = _normalize(q), _normalize(k)
    pos = np.sum(q * k, axis=1, keepdims=True)
    logits = np.concatenate([pos, q @ _normalize(queue).T], 1) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[:, 0]))


def mean_pairwise_cosine(x):
    import numpy as np

    a = _normalize(x)
    n = a.shape[0]
    if n < 2:
        return float("nan")
    s = a @ a.T
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def knn_accuracy(train, train_labels, test, test_labels, k=200, tau=0.1):
    """Weighted k-NN on cosine similarity (Wu et al. 2018's protocol)."""
    import numpy as np

    train, test = _normalize(train), _normalize(test)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], 500):
        s = test[start : start + 500] @ train.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(s, top, 1) / tau)
        votes = np.zeros((s.shape[0], classes))
        for c in range(classes):
            votes[:, c] = (weights * (train_labels[top] == c)).sum(1)
        correct += int(
            (votes.argmax(1) == test_labels[start : start + 500]).sum()
        )
    return correct / test.shape[0]


# === Canonical weights: PyTorch's names and layouts ===


def param_names(widths):
    """Trainable parameters in the reference's `named_parameters` order."""
    names = []
    for i in range(len(widths)):
        names += [
            f"features.{3 * i}.weight",
            f"features.{3 * i + 1}.weight",
            f"features.{3 * i + 1}.bias",
        ]
    return names + ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]


def buffer_names(widths):
    return [
        f"features.{3 * i + 1}.{kind}"
        for i in range(len(widths))
        for kind in ("running_mean", "running_var")
    ]


# === The reference worker (PyTorch) ===


def _reference_side(args):
    import functools
    import socket

    import numpy as np

    torch = import_torch()
    sys.path.insert(0, args.moco_dir)
    from moco import builder

    # builder.py moves its shuffle indices and labels to the GPU; here
    # everything stays on the CPU.
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.set_num_threads(2)
    if not torch.distributed.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32

    class TinyNet(torch.nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            layers, channels = [], 3
            for i, width in enumerate(args.widths):
                layers += [
                    torch.nn.Conv2d(
                        channels, width, 3, 1 if i == 0 else 2, 1, bias=False
                    ),
                    torch.nn.BatchNorm2d(width),
                    torch.nn.ReLU(),
                ]
                channels = width
            self.features = torch.nn.Sequential(*layers)
            self.fc = torch.nn.Linear(channels, num_classes)

        def forward(self, x):
            x = self.features(x.permute(0, 3, 1, 2))
            return self.fc(x.mean(dim=(2, 3)))

    def nt_xent(z, temperature, negatives=None):
        # SimCLR eq. (1) over both views, negatives appended.
        a = torch.nn.functional.normalize(z, dim=1)
        n2 = a.shape[0]
        logits = a @ a.T / temperature
        eye = torch.eye(n2, dtype=torch.bool)
        logits = logits.masked_fill(eye, float("-inf"))
        if negatives is not None:
            queue = torch.nn.functional.normalize(negatives, dim=1)
            logits = torch.cat([logits, a @ queue.T / temperature], 1)
        b = n2 // 2
        positive = torch.cat([torch.arange(b, n2), torch.arange(b)])
        return torch.nn.functional.cross_entropy(logits, positive)

    class LARS:
        # SimCLR's LARS update rule (keras_ssl.optimizers.LARS's
        # docstring): rank-1 parameters are neither decayed nor adapted.
        def __init__(self, params, momentum, weight_decay, eeta=0.001):
            self.params = list(params)
            self.momentum, self.weight_decay, self.eeta = (
                momentum,
                weight_decay,
                eeta,
            )
            self.velocity = [torch.zeros_like(p) for p in self.params]

        @torch.no_grad()
        def step(self, lr):
            for p, v in zip(self.params, self.velocity):
                g = p.grad
                trust = 1.0
                if p.ndim > 1:
                    if self.weight_decay:
                        g = g + self.weight_decay * p
                    w_norm, g_norm = p.norm(), g.norm()
                    if w_norm > 0 and g_norm > 0:
                        trust = self.eeta * w_norm / g_norm
                v.mul_(self.momentum).add_(lr * trust * g)
                p.sub_(v)

        def zero_grad(self):
            for p in self.params:
                p.grad = None

    models = {}

    def build(name, config):
        torch.manual_seed(config["seed"])
        model = builder.MoCo(
            functools.partial(TinyNet),
            dim=args.dim,
            K=config["queue"],
            m=config["ema"],
            T=config["temperature"],
            mlp=True,
        ).to(dtype)
        model.train()
        params = list(model.encoder_q.parameters())
        if config["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=config["learning_rate"], momentum=0.9
            )
        else:
            optimizer = LARS(params, 0.9, config["weight_decay"])
        models[name] = {
            "model": model,
            "optimizer": optimizer,
            "config": config,
            "write_step": np.full(config["queue"], -1),
            "steps": 0,
        }
        return state(name)

    def state(name):
        entry = models[name]
        model = entry["model"]
        q = dict(model.encoder_q.named_parameters())
        q_buffers = dict(model.encoder_q.named_buffers())
        k = dict(model.encoder_k.named_parameters())
        out = {}
        for n in param_names(args.widths):
            out[f"online/{n}"] = q[n].detach().double().numpy()
            out[f"momentum/{n}"] = k[n].detach().double().numpy()
        for n in buffer_names(args.widths):
            out[f"online/{n}"] = q_buffers[n].double().numpy()
        optimizer = entry["optimizer"]
        for n, p in zip(param_names(args.widths), q.values()):
            if isinstance(optimizer, LARS):
                v = next(
                    v
                    for q_, v in zip(optimizer.params, optimizer.velocity)
                    if q_ is p
                )
            else:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                v = (
                    None
                    if buf is None
                    else buf * optimizer.param_groups[0]["lr"]
                )
            if v is not None:
                out[f"velocity/{n}"] = v.detach().double().numpy()
        out["queue"] = model.queue.T.double().numpy()
        out["pointer"] = np.array(int(model.queue_ptr[0]))
        out["write_step"] = entry["write_step"].copy()
        return out

    def diagnose(name, views):
        # The online projections of this step's views with the weights
        # before the step, on batch statistics; BatchNorm's buffers are
        # restored so the probe leaves no trace.
        model = models[name]["model"]
        saved = {n: b.clone() for n, b in model.encoder_q.named_buffers()}
        with torch.no_grad():
            z = model.encoder_q(torch.from_numpy(views).to(dtype))
        for n, b in model.encoder_q.named_buffers():
            b.copy_(saved[n])
        return z.double().numpy()

    def step(name, views, lr, memory):
        entry = models[name]
        model, optimizer, config = (
            entry["model"],
            entry["optimizer"],
            entry["config"],
        )
        x = torch.from_numpy(views).to(dtype)
        before = model.queue.clone().T
        pointer = int(model.queue_ptr[0])
        outputs = {}
        if memory:
            captured = {}
            handle = model.encoder_q.register_forward_hook(
                lambda module, inputs, output: captured.update(z=output)
            )
            logits, labels = model(x, x)
            handle.remove()
            z = captured["z"]
            loss = nt_xent(z, config["temperature"], before)
            outputs["moco_loss"] = float(
                torch.nn.functional.cross_entropy(logits.detach(), labels)
            )
            slots = (pointer + np.arange(x.shape[0])) % config["queue"]
            entry["write_step"][slots] = entry["steps"]
        else:
            z = model.encoder_q(x)
            loss = nt_xent(z, config["temperature"])
        optimizer.zero_grad()
        loss.backward()
        if isinstance(optimizer, LARS):
            optimizer.step(lr)
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        entry["steps"] += 1
        outputs["loss"] = float(loss)
        return outputs

    def features(name, images):
        model = models[name]["model"]
        encoder = model.encoder_q
        encoder.eval()
        out = []
        with torch.no_grad():
            for start in range(0, images.shape[0], 500):
                x = torch.from_numpy(images[start : start + 500]).to(dtype)
                h = encoder.features(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))
                out.append(h.double().numpy())
        encoder.train()
        return np.concatenate(out)

    def init_weights(name, weights):
        model = models[name]["model"]
        with torch.no_grad():
            for net in (model.encoder_q, model.encoder_k):
                tensors = dict(net.named_parameters())
                tensors.update(net.named_buffers())
                for n, value in weights.items():
                    tensors[n].copy_(torch.from_numpy(value))
        return state(name)

    info = {
        "framework": f"PyTorch {torch.__version__}",
        "commit": _git_commit(args.moco_dir),
    }
    return _commands(locals(), info)


COMMANDS = ("build", "state", "step", "diagnose", "features", "init_weights")


def _commands(namespace, info):
    """A worker side's commands, by name, from the functions it defined."""
    return dict({name: namespace[name] for name in COMMANDS}, info=lambda: info)


def _git_commit(path):
    try:
        return subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


# === Our worker (Keras 3) ===


def _ours_side(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from unittest import mock

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_ssl
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.layers import Views
    from keras_ssl.models import SimCLRv2Pretrainer
    from keras_ssl.models import simclrv2_pretrainer

    if args.dtype == "float64":
        keras.config.set_dtype_policy("float64")

    def split_views(layer, images, training=True):
        # The views come made, the same on both sides.
        return images[..., :3], images[..., 3:]

    mock.patch.object(simclrv2_pretrainer, "compiled_call", split_views).start()
    models = {}

    def encoder_of(size):
        inputs = keras.Input((size, size, 3))
        x = inputs
        for i, width in enumerate(args.widths):
            x = keras.layers.ZeroPadding2D(1, name=f"pad{i}")(x)
            x = keras.layers.Conv2D(
                width,
                3,
                strides=1 if i == 0 else 2,
                use_bias=False,
                name=f"conv{i}",
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, name=f"bn{i}"
            )(x)
            x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, x, name="tiny")

    def variables(encoder, head):
        """Keras variables under the reference's names, and how to lay a
        reference array out for each (kernel transposes)."""
        out = {}
        for i in range(len(args.widths)):
            conv = encoder.get_layer(f"conv{i}")
            bn = encoder.get_layer(f"bn{i}")
            out[f"features.{3 * i}.weight"] = (conv.kernel, (2, 3, 1, 0))
            out[f"features.{3 * i + 1}.weight"] = (bn.gamma, None)
            out[f"features.{3 * i + 1}.bias"] = (bn.beta, None)
            out[f"features.{3 * i + 1}.running_mean"] = (bn.moving_mean, None)
            out[f"features.{3 * i + 1}.running_var"] = (
                bn.moving_variance,
                None,
            )
        for j, dense in zip((0, 2), head.dense_layers):
            out[f"fc.{j}.weight"] = (dense.kernel, (1, 0))
            out[f"fc.{j}.bias"] = (dense.bias, None)
        return out

    def build(name, config):
        size = config["image_size"]
        encoder = encoder_of(size)
        head = ProjectionHead(
            num_layers=2,
            output_dim=args.dim,
            use_bias=True,
            batch_norm=False,
        )
        model = SimCLRv2Pretrainer(
            encoder,
            head=head,
            views=Views.from_preset("simclr_cifar", size=size),
            temperature=config["temperature"],
            memory_size=config["queue"] if config["memory"] else 0,
            momentum=config["ema"],
            memory_views=2,
        )
        if config["optimizer"] == "sgd":
            optimizer = keras.optimizers.SGD(
                config["learning_rate"], momentum=0.9
            )
        else:
            optimizer = keras_ssl.optimizers.LARS(
                config["learning_rate"],
                momentum=0.9,
                weight_decay=config["weight_decay"],
            )
        model.compile(optimizer=optimizer)
        models[name] = {
            "model": model,
            "config": config,
            "write_step": np.full(config["queue"], -1),
            "steps": 0,
        }
        return {}

    def init_weights(name, weights, queue=None):
        entry = models[name]
        model = entry["model"]
        nets = [(model.encoder, model.head)]
        if model.queue is not None:
            nets.append((model.momentum_encoder, model.momentum_head))
        for encoder, head in nets:
            for n, (variable, axes) in variables(encoder, head).items():
                value = weights[n]
                if axes is not None:
                    value = np.transpose(value, axes)
                variable.assign(value.astype(variable.dtype))
        if queue is not None and model.queue is not None:
            # MoCo's initial random keys, every slot counting as a key.
            model.queue.queue.assign(queue.astype(model.queue.queue.dtype))
            model.queue.valid.assign(np.ones(queue.shape[0], "int32"))
            model.queue.pointer.assign(0)
        return state(name)

    def state(name):
        entry = models[name]
        model = entry["model"]
        out = {}
        online = variables(model.encoder, model.head)
        optimizer = model.optimizer
        for n, (variable, axes) in online.items():
            prefix = "online"
            value = np.asarray(variable.numpy(), "float64")
            if axes is not None:
                value = np.transpose(value, np.argsort(axes))
            out[f"{prefix}/{n}"] = value
            if optimizer.built and n in param_names(args.widths):
                index = optimizer._get_variable_index(variable)
                if isinstance(optimizer, keras_ssl.optimizers.LARS):
                    v = optimizer._momentums[index].numpy()
                else:
                    # Keras keeps -lr·(PyTorch's buffer).
                    v = -optimizer.momentums[index].numpy()
                v = np.asarray(v, "float64")
                if axes is not None:
                    v = np.transpose(v, np.argsort(axes))
                out[f"velocity/{n}"] = v
        if model.queue is not None:
            memory = variables(model.momentum_encoder, model.momentum_head)
            for n, (variable, axes) in memory.items():
                if n not in param_names(args.widths):
                    continue
                value = np.asarray(variable.numpy(), "float64")
                if axes is not None:
                    value = np.transpose(value, np.argsort(axes))
                out[f"momentum/{n}"] = value
            out["queue"] = np.asarray(model.queue.queue.numpy(), "float64")
            out["valid"] = model.queue.valid.numpy()
            out["ids"] = model.queue.ids.numpy()
            out["pointer"] = np.array(int(model.queue.pointer.numpy()))
            out["write_step"] = entry["write_step"].copy()
        return out

    def diagnose(name, views):
        model = models[name]["model"]
        saved = [v.numpy() for v in model.non_trainable_variables]
        # Both views stacked on the batch axis, as the step encodes them.
        x = tf.constant(views, dtype=model.compute_dtype)
        h = model.encoder(x, training=True)
        z = model.head(h, training=True)[-1]
        for v, value in zip(model.non_trainable_variables, saved):
            v.assign(value)
        return np.asarray(z.numpy(), "float64")

    def step(name, views, lr, memory, ids=None):
        entry = models[name]
        model = entry["model"]
        model.optimizer.learning_rate.assign(lr)
        pointer = (
            int(model.queue.pointer.numpy()) if model.queue is not None else 0
        )
        # Views stacked on channels; the step splits them.
        x = np.concatenate(
            [views[: len(views) // 2], views[len(views) // 2 :]], -1
        )
        batch = x if ids is None else {"unlabeled": x, "unlabeled_ids": ids}
        logs = model.train_on_batch(batch, return_dict=True)
        if model.queue is not None:
            slots = (pointer + np.arange(len(views))) % entry["config"]["queue"]
            entry["write_step"][slots] = entry["steps"]
        entry["steps"] += 1
        return {"loss": float(logs["loss"])}

    def features(name, images):
        model = models[name]["model"]
        out = []
        for start in range(0, images.shape[0], 500):
            h = model.encoder(images[start : start + 500], training=False)
            out.append(np.asarray(h.numpy(), "float64"))
        return np.concatenate(out)

    info = {"framework": f"Keras {keras.__version__}, TF {tf.__version__}"}
    return _commands(locals(), info)


# === Worker protocol: JSON lines, arrays in .npy/.npz files ===


def _load(path):
    import numpy as np

    if path is None:
        return None
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    return np.load(path)


def worker(args):
    """Serves requests over stdin/stdout: one JSON line each way."""
    import numpy as np

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        side = (_ours_side if args.worker == "ours" else _reference_side)(args)
    except ImportError as error:
        channel.write(json.dumps({"error": str(error)}) + "\n")
        return
    channel.write(json.dumps({"ready": side["info"]()}) + "\n")
    counter = 0
    step_views = None
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("command")
        arrays = {k: _load(v) for k, v in request.pop("arrays", {}).items()}
        reply = {}
        if "seed" in request:
            # A run's step: the worker draws the step's views itself.
            if step_views is None:
                step_views = StepViews(load_cifar(args)[0], args.run_batch)
            views, index = step_views.get(request.pop("seed"), request.pop("t"))
            arrays["views"] = views
            if request.pop("with_ids"):
                arrays["ids"] = index.astype("int32")
            reply["checksum"] = float(views.sum(dtype="float64"))
        result = side[command](**request, **arrays)
        if isinstance(result, dict) and any(
            isinstance(v, np.ndarray) for v in result.values()
        ):
            counter += 1
            path = os.path.join(args.scratch, f"{args.worker}_{counter}.npz")
            np.savez(path, **result)
            reply["file"] = path
        elif isinstance(result, np.ndarray):
            counter += 1
            path = os.path.join(args.scratch, f"{args.worker}_{counter}.npy")
            np.save(path, result)
            reply["file"] = path
        else:
            reply["value"] = result
        channel.write(json.dumps(reply) + "\n")


class Worker:
    def __init__(self, kind, args, argv, scratch):
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        python = sys.executable
        if kind == "reference":
            python = args.reference_python
        else:
            env["KERAS_BACKEND"] = "tensorflow"
        self.scratch = scratch
        self.counter = 0
        self.process = subprocess.Popen(
            [
                python,
                os.path.abspath(__file__),
                "--worker",
                kind,
                "--scratch",
                scratch,
                *argv,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self._read()
        if "error" in ready:
            self.close()
            raise RuntimeError(ready["error"])
        self.info = ready["ready"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"A worker exited (status {self.process.wait()}); its "
                "error is above."
            )
        return json.loads(line)

    def ask(self, command, arrays=None, **kwargs):
        import numpy as np

        files = {}
        for key, value in (arrays or {}).items():
            if value is None:
                continue
            self.counter += 1
            if isinstance(value, dict):
                path = os.path.join(
                    self.scratch, f"in_{id(self)}_{self.counter}.npz"
                )
                np.savez(path, **value)
            else:
                path = os.path.join(
                    self.scratch, f"in_{id(self)}_{self.counter}.npy"
                )
                np.save(path, value)
            files[key] = path
        request = dict(kwargs, command=command, arrays=files)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        for path in files.values():
            os.remove(path)
        if "file" in reply:
            value = _load(reply["file"])
            os.remove(reply["file"])
            return value
        if "checksum" in reply:
            return dict(reply["value"], checksum=reply["checksum"])
        return reply["value"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()


# === Parity ===


def _relative(a, b):
    import numpy as np

    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale


def compare_states(ours, reference, widths):
    """Max relative error (max |a − b| / max |b|) per quantity."""
    import numpy as np

    rows = {}
    for group in ("online", "velocity", "momentum"):
        errors = {
            n: _relative(ours[f"{group}/{n}"], reference[f"{group}/{n}"])
            for n in param_names(widths)
            if f"{group}/{n}" in reference
        }
        worst = max(errors, key=errors.get, default=None)
        rows[group] = errors[worst] if errors else float("nan")
        rows[f"_{group}_worst"] = worst
    rows["queue"] = _relative(
        _normalize(ours["queue"]), _normalize(reference["queue"])
    )
    rows["pointer"] = int(ours["pointer"]) - int(reference["pointer"])
    rows["_pointers"] = (int(ours["pointer"]), int(reference["pointer"]))
    rows["_queue_size"] = int(np.asarray(reference["queue"]).shape[0])
    return rows


def run_parity(args, workers):
    import numpy as np

    reference, ours = workers["reference"], workers["ours"]
    config = {
        "seed": args.seed,
        "queue": args.queue,
        "ema": args.ema,
        "temperature": args.temperature,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "image_size": args.image_size,
        "memory": True,
    }
    start = reference.ask("build", name="parity", config=config)
    weights = {
        n: start[f"online/{n}"]
        for n in param_names(args.widths) + buffer_names(args.widths)
    }
    ours.ask("build", name="parity", config=config)
    ours.ask(
        "init_weights",
        name="parity",
        arrays={"weights": weights, "queue": start["queue"]},
    )
    rng = np.random.default_rng(args.seed)
    dtype = "float64" if args.dtype == "float64" else "float32"
    checkpoints = sorted(
        {t for t in (1, 2, 5, 10) if t < args.steps} | {1, args.steps}
    )
    table, losses = {}, []
    for t in range(1, args.steps + 1):
        size = args.image_size
        views = parity_views(rng, args.batch, size).astype(dtype)
        ref_state = reference.ask("state", name="parity")
        ref_z = reference.ask(
            "diagnose", name="parity", arrays={"views": views}
        )
        our_z = ours.ask("diagnose", name="parity", arrays={"views": views})
        r = reference.ask(
            "step",
            name="parity",
            lr=args.learning_rate,
            memory=True,
            arrays={"views": views},
        )
        o = ours.ask(
            "step",
            name="parity",
            lr=args.learning_rate,
            memory=True,
            arrays={"views": views},
        )
        ref_after = reference.ask("state", name="parity")
        our_after = ours.ask("state", name="parity")
        # Each side's loss recomputed in NumPy (float64) from its own
        # projections and its queue before the step.
        np_ref = nt_xent_probabilities(
            ref_z, args.temperature, ref_state["queue"]
        )[0]
        keys = _keys_of_step(ref_after, 2 * args.batch)
        our_keys = _keys_of_step(our_after, 2 * args.batch)
        b = args.batch
        moco_ref = moco_loss(
            ref_z[:b], keys[b:], ref_state["queue"], args.temperature
        )
        losses.append(
            {
                "step": t,
                "reference": r["loss"],
                "ours": o["loss"],
                "numpy_reference": np_ref,
                "moco_loss_reference": r["moco_loss"],
                "moco_formula_numpy_reference": moco_ref,
                "moco_formula_numpy_ours": moco_loss(
                    our_z[:b],
                    our_keys[b:],
                    ref_state["queue"],
                    args.temperature,
                )
                if t == 1
                else None,
            }
        )
        if t in checkpoints:
            rows = compare_states(our_after, ref_after, args.widths)
            rows["loss"] = abs(o["loss"] - r["loss"]) / abs(r["loss"])
            rows["projections"] = _relative(our_z, ref_z)
            rows["keys"] = _relative(_normalize(our_keys), _normalize(keys))
            table[t] = rows
    return table, losses


def _keys_of_step(state, count):
    """The rows the last step wrote: the `count` slots before the pointer."""
    import numpy as np

    size = state["queue"].shape[0]
    slots = (int(state["pointer"]) - count + np.arange(count)) % size
    return state["queue"][slots]


def _print_header(infos):
    print(machine())
    print(
        f"reference: facebookresearch/moco {infos['reference']['commit']} "
        f"({infos['reference']['framework']}); ours: "
        f"{infos['ours']['framework']}"
    )


def print_parity(args, table, losses, infos):
    _print_header(infos)
    print(
        f"network: convolutions {args.widths} + MoCo v2 head, dim {args.dim}; "
        f"batch {args.batch} ({2 * args.batch} views, both keyed), queue "
        f"{args.queue}, EMA {args.ema}, temperature {args.temperature}, "
        f"{args.optimizer} lr {args.learning_rate}, {args.dtype}, "
        f"{args.image_size}-px random views"
    )
    print()
    columns = sorted(table)
    print(
        "| max relative error | "
        + " | ".join(f"step {t}" for t in columns)
        + " |"
    )
    print("| --- |" + " ---: |" * len(columns))
    labels = {
        "projections": "online projections before the step",
        "keys": "keys written by the step",
        "loss": "loss",
        "online": "online weights after the step",
        "velocity": "optimizer velocities",
        "momentum": "momentum network's weights",
        "queue": "queue (l2-normalised rows)",
    }
    for key, label in labels.items():
        cells = [
            f"{table[t][key]:.2e}"
            + (
                f" ({table[t]['_' + key + '_worst']})"
                if f"_{key}_worst" in table[t]
                else ""
            )
            for t in columns
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = [
        f"{table[t]['_pointers'][0]} vs {table[t]['_pointers'][1]}"
        for t in columns
    ]
    print("| queue pointer (ours vs reference) | " + " | ".join(cells) + " |")
    print()
    print(
        "| step | loss, reference (NT-Xent over MoCo's queue) | ours | "
        "NumPy eq. (1), reference's projections and queue | MoCo's own "
        "loss on its logits | MoCo's formula in NumPy (query view 1, key "
        "view 2) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in losses:
        if row["step"] in (1, 2, 5, 10, args.steps):
            print(
                f"| {row['step']} | {row['reference']:.6f} | "
                f"{row['ours']:.6f} | {row['numpy_reference']:.6f} | "
                f"{row['moco_loss_reference']:.6f} | "
                f"{row['moco_formula_numpy_reference']:.6f} |"
            )
    first = losses[0]
    print(
        "MoCo's formula in NumPy at step 1 on our projections and keys: "
        f"{first['moco_formula_numpy_ours']:.6f} (reference's: "
        f"{first['moco_formula_numpy_reference']:.6f})"
    )


# === Short runs ===


def load_cifar(args):
    import numpy as np

    def part(name):
        with np.load(os.path.join(args.data_dir, f"{name}.npz")) as data:
            return data["x"], data["y"]

    x, y = part("train")
    xt, yt = part("test")
    rng = np.random.default_rng(1234)
    train = rng.permutation(len(x))[: args.images]
    test = rng.permutation(len(xt))[: args.test_images]
    x, xt = x[train], xt[test]
    factor = 32 // args.run_image_size
    if factor > 1:
        # Mean of each factor x factor block, rounded back to uint8.
        def down(a):
            n = a.shape[0]
            a = a.reshape(n, 32 // factor, factor, 32 // factor, factor, 3)
            return np.round(a.mean(axis=(2, 4))).astype("uint8")

        x, xt = down(x), down(xt)
    return x, y[train], xt, yt[test]


class StepViews:
    """Each step's batch of a run, drawn in order from the run's seed: the
    indices of `batch` images and their two augmented views, stacked.

    The parent and both workers each draw them, with the same code and
    seed, so no step's views travel between processes; the parent checks
    a checksum of every step's views from each worker against its own.
    """

    def __init__(self, images, batch):
        self.images, self.batch = images, batch
        self.seed = self.step = self.rng = None
        self.views = self.index = None

    def get(self, seed, step):
        import numpy as np

        if seed != self.seed or step < self.step:
            self.seed, self.step = seed, -1
            self.rng = np.random.default_rng(seed)
        while self.step < step:
            n = len(self.images)
            self.index = self.rng.choice(n, self.batch, replace=False)
            x = self.images[self.index]
            self.views = np.concatenate(
                [augment(x, self.rng), augment(x, self.rng)]
            )
            self.step += 1
        return self.views, self.index


def memory_probe(z, state, step, temperature, ids, own):
    """The memory's intermediate quantities at one step, from the online
    projections of the step's views (before the step), the queue before
    the step, and the state after it."""
    import numpy as np

    out = {"online_cosine": mean_pairwise_cosine(z)}
    if state is None or "queue" not in state or "_before" not in state:
        return out
    before = state["_before"]
    valid = before.get("valid")
    valid = (
        np.ones(before["queue"].shape[0], bool) if valid is None else valid > 0
    )
    mask = np.broadcast_to(valid, (z.shape[0], valid.shape[0]))
    if own and "ids" in before:
        both = np.concatenate([ids, ids])
        mask = mask & ~(both[:, None] == before["ids"][None, :])
    _, p, positive, n2 = nt_xent_probabilities(
        z, temperature, before["queue"], mask
    )
    negatives = p.copy()
    negatives[np.arange(n2), positive] = 0.0
    queue_mass = negatives[:, n2:].sum(1)
    keys = _keys_of_step(state, z.shape[0])
    # Keys written by a step (MoCo's initial random keys have no age).
    written = before["write_step"][valid]
    written = written[written >= 0]
    out.update(
        queue_cosine=mean_pairwise_cosine(before["queue"][valid])
        if valid.sum() > 1
        else float("nan"),
        key_cosine=mean_pairwise_cosine(keys),
        queue_gradient_share=float(np.mean(queue_mass / negatives.sum(1))),
        key_age=float(np.mean(step - written))
        if written.size
        else float("nan"),
        query_key_cosine=float(
            np.mean(np.sum(_normalize(z) * _normalize(keys), axis=1))
        ),
        own_image_share=float(
            1.0 - mask.sum() / np.broadcast_to(valid, mask.shape).sum()
        )
        if own
        else float("nan"),
    )
    return out


def momentum_distance(state, widths):
    """||θ_memory − θ_online|| / ||θ_online|| over the trainable weights."""
    import numpy as np

    if f"momentum/{param_names(widths)[0]}" not in state:
        return float("nan")
    diff = sum(
        float(np.sum((state[f"momentum/{n}"] - state[f"online/{n}"]) ** 2))
        for n in param_names(widths)
    )
    norm = sum(
        float(np.sum(state[f"online/{n}"] ** 2)) for n in param_names(widths)
    )
    return math.sqrt(diff / norm)


def run_short(args, workers, infos):
    import numpy as np

    x, y, xt, yt = load_cifar(args)
    side = {n: workers[n.split("_")[0]] for n in args.runs}
    results = {}
    probe_steps = sorted(
        {1, *range(args.probe_every, args.run_steps + 1, args.probe_every)}
    )
    for seed in args.seeds:
        config = {
            "seed": seed,
            "queue": args.run_queue,
            "ema": args.run_ema,
            "temperature": args.temperature,
            "optimizer": "lars",
            "learning_rate": learning_rate(args, 0),
            "weight_decay": args.weight_decay,
            "image_size": args.run_image_size,
        }
        # The reference's initial weights for this seed, for every run.
        start = workers["reference"].ask(
            "build", name=f"init_{seed}", config=dict(config, memory=True)
        )
        for name in args.runs:
            cfg = dict(config, memory=name.endswith("memory"))
            side[name].ask("build", name=name, config=cfg)
        weights = {
            n: start[f"online/{n}"]
            for n in param_names(args.widths) + buffer_names(args.widths)
        }
        for name in args.runs:
            arrays = {"weights": weights}
            if name == "ours_memory":
                arrays["queue"] = None
            side[name].ask("init_weights", name=name, arrays=arrays)
        step_views = StepViews(x, args.run_batch)
        curves = {n: [] for n in args.runs}
        probes = {n: {} for n in args.runs}
        wall = {n: 0.0 for n in args.runs}
        for t in range(args.run_steps):
            views, index = step_views.get(seed, t)
            checksum = float(views.sum(dtype="float64"))
            lr = learning_rate(args, t)
            for name in args.runs:
                memory = name.endswith("memory")
                probe = (t + 1) in probe_steps
                before = z = None
                if probe:
                    z = side[name].ask(
                        "diagnose", name=name, arrays={"views": views}
                    )
                    if memory:
                        before = side[name].ask("state", name=name)
                began = time.perf_counter()
                out = side[name].ask(
                    "step",
                    name=name,
                    lr=lr,
                    memory=memory,
                    seed=seed,
                    t=t,
                    with_ids=name == "ours_memory",
                )
                wall[name] += time.perf_counter() - began
                if out["checksum"] != checksum:
                    raise RuntimeError(
                        f"The {name} worker drew other views at step {t} "
                        f"(checksum {out['checksum']} vs {checksum}): its "
                        "NumPy draws differently from the parent's."
                    )
                curves[name].append(out["loss"])
                if probe:
                    after = side[name].ask("state", name=name)
                    if before is not None:
                        after["_before"] = before
                    values = memory_probe(
                        z,
                        after if memory else None,
                        t,
                        args.temperature,
                        index,
                        own=name == "ours_memory",
                    )
                    if memory:
                        values["momentum_distance"] = momentum_distance(
                            after, args.widths
                        )
                    probes[name][t + 1] = values
        for name in args.runs:
            train = side[name].ask(
                "features",
                name=name,
                arrays={"images": x.astype("float32") / 255},
            )
            test = side[name].ask(
                "features",
                name=name,
                arrays={"images": xt.astype("float32") / 255},
            )
            results.setdefault(name, []).append(
                {
                    "seed": seed,
                    "curve": curves[name],
                    "probes": probes[name],
                    "knn": knn_accuracy(train, y, test, yt),
                    "wall": wall[name],
                }
            )
            print(
                f"seed {seed} {name}: loss {curves[name][0]:.3f} -> "
                f"{np.mean(curves[name][-10:]):.3f}, k-NN "
                f"{results[name][-1]['knn']:.4f}, {wall[name]:.0f} s",
                flush=True,
            )
        # The tables so far, in case a long run is cut short.
        print_runs(args, results, infos)
        sys.stdout.flush()
    return results


def print_runs(args, results, infos):
    import numpy as np

    _print_header(infos)
    print(
        f"CIFAR-10 at {args.run_image_size} px: {args.images} training "
        "images (k-NN bank), "
        f"{args.test_images} test images; convolutions {args.widths} + MoCo "
        f"v2 head, dim {args.dim}; batch {args.run_batch}, {args.run_steps} "
        f"steps, LARS {args.run_learning_rate}·B/256 (5% warm-up, cosine), "
        f"weight decay {args.weight_decay}, temperature {args.temperature}; "
        f"memory {args.run_queue} keys (both views), EMA {args.run_ema}; "
        f"seeds {args.seeds}"
    )
    print()
    points = sorted(
        {10, args.run_steps // 4, args.run_steps // 2, args.run_steps}
    )
    print(
        "| run | "
        + " | ".join(f"loss at step {p} (mean of 10)" for p in points)
        + " | k-NN accuracy, mean ± sd | per seed | step wall (s) |"
    )
    print("| --- |" + " ---: |" * (len(points) + 3))
    for name, runs in results.items():
        cells = []
        for p in points:
            values = [np.mean(r["curve"][max(0, p - 10) : p]) for r in runs]
            cells.append(f"{np.mean(values):.3f}")
        knn = [r["knn"] for r in runs]
        spread = np.std(knn, ddof=1) if len(knn) > 1 else 0.0
        wall = np.mean([r["wall"] / args.run_steps for r in runs])
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {100 * np.mean(knn):.1f}% ± {100 * spread:.1f} | "
            + ", ".join(f"{100 * v:.1f}" for v in knn)
            + f" | {wall:.2f} |"
        )
    print()
    keys = (
        ("online_cosine", "online projections, mean pairwise cosine"),
        ("key_cosine", "this step's keys, mean pairwise cosine"),
        ("queue_cosine", "queue's keys, mean pairwise cosine"),
        (
            "queue_gradient_share",
            "queue's share of the negatives' softmax mass",
        ),
        ("key_age", "mean age of the queue's keys (steps)"),
        ("query_key_cosine", "cosine of a view's projection and its key"),
        ("momentum_distance", "‖θ_memory − θ_online‖ / ‖θ_online‖"),
        (
            "own_image_share",
            "share of queue entries masked as the query's own image",
        ),
    )
    probe_steps = sorted(next(iter(results.values()))[0]["probes"])
    print(
        "| quantity | run | "
        + " | ".join(f"step {s}" for s in probe_steps)
        + " |"
    )
    print("| --- | --- |" + " ---: |" * len(probe_steps))
    for key, label in keys:
        for name, runs in results.items():
            values = [
                [r["probes"][s].get(key, float("nan")) for r in runs]
                for s in probe_steps
            ]
            if all(np.isnan(v).all() for v in values):
                continue
            cells = [
                f"{np.nanmean(v):.3f}" if not np.isnan(v).all() else "—"
                for v in values
            ]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.mode == "runs" and not os.path.isfile(
        os.path.join(args.data_dir, "train.npz")
    ):
        raise ValueError(
            "`--data-dir` must hold CIFAR-10's train.npz and test.npz. "
            f"Received: data_dir={args.data_dir!r}"
        )
    workers = {}
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for kind in ("reference", "ours"):
                workers[kind] = Worker(kind, args, argv, scratch)
            infos = {k: w.info for k, w in workers.items()}
            if args.mode == "parity":
                table, losses = run_parity(args, workers)
                print_parity(args, table, losses, infos)
                return table, losses
            return run_short(args, workers, infos)
        finally:
            for w in workers.values():
                w.close()


if __name__ == "__main__":
    main()
