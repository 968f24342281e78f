"""SemPPL's training step against google-deepmind/semppl's own JAX code.

    PYTHONPATH=. python benchmarks/parity_semppl.py \\
        --semppl-dir /path/to/semppl \\
        --reference-python /path/to/jax-venv/bin/python [--float64]
    PYTHONPATH=. python benchmarks/parity_semppl.py --semppl-dir ... \\
        --reference-python ... --short-runs --data_dir .../cifar10

What the reference holds. The public semppl repository (checked at
45cb07dd) is the linear-evaluation pipeline of the paper: its networks
(`utils/networks.py`: BYOL's Haiku `ResNetTorso` and `MLP`), its LARS
(`utils/optimizers.py`, with the weight-decay and trust-ratio masks
`exclude_bias_and_norm`), its schedules (`utils/schedules.py`: the
learning rate and the EMA target's `target_ema`), its augmentations
(`utils/augmentations.py`) and an evaluation experiment. It has no
pretraining update: no SemPPL loss, no queue, no k-NN voting, no semantic
positives and no EMA update of a target network (only its rate's
schedule). The reference side of this benchmark therefore runs the
reference's networks, optimizer, schedules and augmentations as they are,
and joins them with a JAX transcription, written here from the paper
(eq. 10, Appendices B-D and the pseudo-code), of the parts the repository
does not hold; the EMA update is BYOL's (`target + (1 - tau) * (online -
target)` after the optimizer step, with `tau` from `target_ema`). A
disagreement in those parts can be a misreading shared by both sides; a
disagreement in the networks, LARS or the schedules cannot.

Shims (the reference pins jax 0.3.25; the worker runs current JAX and
Haiku, and never edits the checkout):
- `jax.tree_map`, removed from JAX, is set to `jax.tree_util.tree_map`
  before the reference is imported (its LARS and helpers call it).
- The weight decay's empty optimizer state (`AddWeightDecayState`)
  subclasses optax's `TransformInitFn`, today a Protocol and no pytree,
  which `jax.jit` rejects; it is registered as a pytree without leaves.
- The checkout is imported as the package `semppl` (its own absolute
  imports) through a module whose `__path__` is the checkout, whatever the
  checkout's folder is called.
- `ResNetTorso` takes an int `width_multiplier` (64 * w stem channels).
  The small networks here need a fraction (w = 1/8: 8, 8, 16, 32, 64
  channels), passed as a float whose products are whole channel counts.
- The reference crops in TensorFlow (`dataset._decode_and_random_crop`,
  JPEG bytes); the worker has no TensorFlow and draws the same crop (area
  U(0.08, 1), log-uniform aspect ratio in [3/4, 4/3], rounded, clipped to
  the image) in NumPy from decoded images, then resizes bilinearly.
  Everything after the crop is `augmentations.postprocess`'s own code.

Step parity (the default): both sides start from the reference's Haiku
initialisation (written into keras-ssl's `ResNet` and heads by name), get
the same views, labeled batch, queue contents and random numbers (the
negatives' and semantic positives' uniforms keras-ssl draws are replayed
and sent), and after 1 and `--steps` steps every weight, LARS slot, EMA
target weight and queue is compared (max |ours - theirs| / max |theirs|).

Short runs (`--short-runs`): each side trains on the same CIFAR-10 images
with its own augmentations and the same settings; loss, pseudo-label and
k-NN accuracy are printed per seed.
"""

import argparse
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import time

try:  # the worker reports a reference environment without NumPy itself
    import numpy as np
except ImportError:
    np = None

# Files of the checkout the worker imports (relative to --semppl-dir).
REFERENCE_FILES = (
    "utils/__init__.py",
    "utils/networks.py",
    "utils/optimizers.py",
    "utils/schedules.py",
    "utils/helpers.py",
    "utils/augmentations.py",
)
# Import name -> what to install, for the reference environment.
REFERENCE_PACKAGES = (
    ("numpy", "numpy"),
    ("jax", "jax"),
    ("haiku", "dm-haiku"),
    ("optax", "optax"),
    ("tree", "dm-tree"),
)
HIDDEN = 64  # width of the heads' hidden layer (the paper's 4096)
OUTPUT = 32  # projection width (the paper's 256)


def check_semppl_dir(path):
    """The checkout's path, or a ValueError naming every missing file."""
    if path is None:
        raise ValueError(
            "--semppl-dir is required: a checkout of google-deepmind/semppl. "
            "Received: --semppl-dir=None"
        )
    root = pathlib.Path(path)
    missing = [f for f in REFERENCE_FILES if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"--semppl-dir={path} lacks {', '.join(missing)}: not a "
            "checkout of google-deepmind/semppl"
        )
    return str(root.resolve())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--semppl-dir")
    parser.add_argument("--reference-python", default=sys.executable)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--momentum", type=float, default=0.996)
    parser.add_argument(
        "--ema-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="the target's EMA rate on the reference side: constant (as "
        "keras-ssl) or the reference's target_ema cosine schedule",
    )
    parser.add_argument("--invariance-scale", type=float, default=5.0)
    parser.add_argument("--learning-rate", type=float, default=8.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--small-size", type=int, default=16)
    parser.add_argument("--large-views", type=int, default=2)
    parser.add_argument("--small-views", type=int, default=1)
    parser.add_argument("--unlabeled", type=int, default=12)
    parser.add_argument("--labeled", type=int, default=4)
    parser.add_argument("--queue", type=int, default=24)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--positives", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    # Short runs.
    parser.add_argument("--short-runs", action="store_true")
    parser.add_argument("--data_dir")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--labels-per-class", type=int, default=25)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sides", default="reference,ours")
    parser.add_argument("--invariance-scales", default="5,0")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.semppl_dir = check_semppl_dir(args.semppl_dir)
    if not pathlib.Path(args.reference_python).is_file():
        raise ValueError(
            "--reference-python must be a Python with jax and dm-haiku. "
            f"Received: --reference-python={args.reference_python}"
        )
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1. Received: {args.steps}")
    if not 0 <= args.momentum < 1:
        raise ValueError(
            f"--momentum must be in [0, 1). Received: {args.momentum}"
        )
    if args.negatives >= args.unlabeled + args.labeled:
        raise ValueError(
            "--negatives must be smaller than the batch "
            f"({args.unlabeled + args.labeled}). Received: {args.negatives}"
        )
    if args.queue < args.labeled:
        raise ValueError(
            f"--queue must hold a batch's {args.labeled} labeled images. "
            f"Received: {args.queue}"
        )
    if args.short_runs and not args.data_dir:
        raise ValueError(
            "--short-runs needs --data_dir (CIFAR-10 as NumPy arrays). "
            "Received: --data_dir=None"
        )
    return args


# --- pipes ---------------------------------------------------------------
def send(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def missing_reference_packages():
    """Pip names of the packages the reference needs that do not import."""
    import importlib.util

    return [
        pip
        for name, pip in REFERENCE_PACKAGES
        if importlib.util.find_spec(name) is None
    ]


class Reference:
    """The worker process in the reference's environment."""

    def __init__(self, args):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH="")
        self.process = subprocess.Popen(
            [args.reference_python, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        hello = receive(self.process.stdout)
        if hello is None or "error" in hello:
            self.close()
            message = "no answer" if hello is None else hello["error"]
            raise RuntimeError(
                f"--reference-python={args.reference_python}: {message}"
            )

    def ask(self, command, **kwargs):
        send(self.process.stdin, dict(kwargs, command=command))
        answer = receive(self.process.stdout)
        if answer is None:
            raise RuntimeError(f"the reference worker died on {command!r}")
        if "error" in answer:
            raise RuntimeError(f"reference worker: {answer['error']}")
        return answer

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()


# --- the reference side (runs under --reference-python) ------------------
class _Channels(float):
    """A fractional width whose products are whole channel counts.

    `ResNetTorso` builds `64 * w` stem and `w * c` group channels for an
    int `w`; Haiku's modules need ints, so the products are rounded.
    """

    def __mul__(self, other):
        return int(round(float(self) * other))

    __rmul__ = __mul__


_REGISTERED = set()


def _import_reference(semppl_dir):
    import types

    import jax

    # Shim: jax.tree_map left JAX in 0.6; the reference's LARS and helpers
    # call it.
    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree_util.tree_map
    package = types.ModuleType("semppl")
    package.__path__ = [semppl_dir]
    sys.modules["semppl"] = package
    from semppl.utils import augmentations
    from semppl.utils import helpers
    from semppl.utils import networks
    from semppl.utils import optimizers
    from semppl.utils import schedules

    # Shim: the weight decay's empty state subclasses optax's
    # `TransformInitFn`, a Protocol in today's optax and no pytree: jit
    # rejects it. Registered as a pytree with no leaves.
    state = optimizers.AddWeightDecayState
    if state not in _REGISTERED:
        jax.tree_util.register_pytree_node(
            state, lambda s: ((), None), lambda aux, children: state()
        )
        _REGISTERED.add(state)
    return networks, optimizers, schedules, helpers, augmentations


class ReferenceStep:
    """The reference's networks, LARS and schedules, and SemPPL's step."""

    def __init__(self, config):
        import haiku as hk
        import jax

        if config["float64"]:
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        self.jax, self.jnp, self.hk = jax, jnp, hk
        (
            self.networks,
            self.optimizers,
            self.schedules,
            self.helpers,
            self.augmentations,
        ) = _import_reference(config["semppl_dir"])
        self.config = config
        self.dtype = jnp.float64 if config["float64"] else jnp.float32
        networks = self.networks
        # BYOL's pretraining BatchNorm settings (MLP needs all four).
        bn = {
            "decay_rate": 0.9,
            "eps": 1e-5,
            "create_scale": True,
            "create_offset": True,
        }

        def encoder(x, is_training):
            return networks.ResNetTorso(
                blocks_per_group=(2, 2, 2, 2),
                bottleneck=False,
                channels_per_group=(64, 128, 256, 512),
                width_multiplier=_Channels(config["width"]),
                bn_config=bn,
                name="encoder",
            )(x, is_training)

        def projector(h, is_training):
            return networks.MLP("projector", HIDDEN, OUTPUT, bn)(h, is_training)

        def online(x, is_training):
            z = projector(encoder(x, is_training), is_training)
            return networks.MLP("predictor", HIDDEN, OUTPUT, bn)(z, is_training)

        def target(x, is_training):
            return projector(encoder(x, is_training), is_training)

        def embed(x):
            return encoder(x, False)

        self.online = hk.transform_with_state(online)
        self.target = hk.transform_with_state(target)
        self.embedder = hk.transform_with_state(embed)
        self._update = jax.jit(self._update_fn)
        self._embed = jax.jit(
            lambda p, s, x: self.embedder.apply(p, s, None, x)
        )
        self.reset(config["seed"])

    def reset(self, seed):
        """Fresh weights, optimizer state and queues from `seed` (the
        compiled step is kept)."""
        jax, jnp = self.jax, self.jnp
        self.config = dict(self.config, seed=seed)
        size = self.config["image_size"]
        dummy = jnp.zeros((2, size, size, 3), self.dtype)
        key = jax.random.PRNGKey(seed)
        params, state = self.online.init(key, dummy, True)
        cast = self._cast
        self.params, self.state = cast(params), cast(state)
        self.target_params = {
            k: v for k, v in self.params.items() if "predictor" not in k
        }
        self.target_state = {
            k: v for k, v in self.state.items() if "predictor" not in k
        }
        self.opt_state = self._optimizer(0.0).init(self.params)
        self.step_count = 0
        self.queues = None
        self._rng = np.random.default_rng(seed)
        self._key = jax.random.PRNGKey(seed + 1)

    def _cast(self, tree):
        jnp = self.jnp

        def cast(x):
            x = jnp.asarray(x)
            return x.astype(self.dtype) if x.dtype.kind == "f" else x

        return self.jax.tree_util.tree_map(cast, tree)

    def _optimizer(self, learning_rate):
        # The reference's LARS, masks as BYOL's pretraining sets them.
        exclude = self.optimizers.exclude_bias_and_norm
        return self.optimizers.lars(
            learning_rate,
            weight_decay=self.config["weight_decay"],
            momentum=0.9,
            eta=1e-3,
            weight_decay_filter=exclude,
            lars_adaptation_filter=exclude,
        )

    def random_queues(self, num_large, size):
        """The queue's start: random unit vectors, no valid slot."""
        rng = np.random.default_rng(self.config["seed"] + 2)
        values = []
        for _ in range(num_large):
            v = rng.normal(size=(size, OUTPUT))
            values.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        self.set_queues(values, np.full(size, -1), np.zeros(size, bool), 0)

    def set_queues(self, values, labels, valid, pointer):
        jnp = self.jnp
        self.queues = {
            "values": [jnp.asarray(v, self.dtype) for v in values],
            "labels": jnp.asarray(labels, jnp.int32),
            "valid": jnp.asarray(valid, bool),
            "pointer": jnp.asarray(pointer, jnp.int32),
        }

    # -- SemPPL's step, transcribed from the paper ------------------------
    def _log_p(self, anchor, positive, negatives):
        """log p(anchor; positive) over [positive, negatives] (eqs. 5-6)."""
        jnp = self.jnp
        tau = self.config["temperature"]
        pos = jnp.sum(anchor * positive, -1, keepdims=True)
        neg = jnp.einsum("bd,bnd->bn", anchor, negatives)
        return self.jax.nn.log_softmax(jnp.concatenate([pos, neg], -1) / tau)

    def _kl(self, log_p, log_q):
        """Appendix B: sg[E_p log p] - E_p log q."""
        jnp = self.jnp
        p = jnp.exp(log_p)
        return self.jax.lax.stop_gradient(jnp.sum(p * log_p, -1)) - jnp.sum(
            p * log_q, -1
        )

    def _semantic_slots(self, labels, uniform, queue_labels, valid):
        """Per anchor, P slots drawn uniformly among the valid slots of its
        label: the floor(u * n)-th such slot in queue order."""
        jnp = self.jnp
        match = valid[None, :] & (queue_labels[None, :] == labels[:, None])
        count = jnp.sum(match, 1)
        rank = jnp.floor(uniform * count[:, None]).astype(jnp.int32)
        running = jnp.cumsum(match.astype(jnp.int32), 1)
        slots = jnp.argmax(running[:, None, :] > rank[:, :, None], -1)
        return slots, count > 0

    def _pseudo_labels(self, predictions, queues, queue_labels, valid):
        """View voting: L^2 k-NN lookups (cosine, k neighbours), majority,
        ties to the lowest class."""
        jnp = self.jnp
        c = self.config
        votes = 0.0
        for p in predictions:
            p = self.helpers.l2_normalize(p, axis=-1)
            for q in queues:
                sims = jnp.where(valid[None, :], p @ q.T, -jnp.inf)
                _, nearest = self.jax.lax.top_k(sims, c["k"])
                votes = votes + jnp.sum(
                    self.jax.nn.one_hot(
                        queue_labels[nearest], c["num_classes"]
                    ),
                    1,
                )
        return jnp.argmax(votes, -1), votes

    def _loss(self, params, state, target_z, queues, batch):
        jax, jnp = self.jax, self.jnp
        c = self.config
        norm = self.helpers.l2_normalize
        num_large = len(batch["large"])
        num_small = len(batch["small"])
        u = c["unlabeled"]
        out, state = self.online.apply(
            params, state, None, jnp.concatenate(batch["large"]), True
        )
        large = jnp.split(out, num_large)
        small = []
        if num_small:
            out, state = self.online.apply(
                params, state, None, jnp.concatenate(batch["small"]), True
            )
            small = jnp.split(out, num_small)
        values = queues["values"]
        labels, votes = self._pseudo_labels(
            [jax.lax.stop_gradient(p[:u]) for p in large],
            values,
            queues["labels"],
            queues["valid"],
        )
        anchor_labels = jnp.concatenate([labels, batch["labels"]])
        slots, has = self._semantic_slots(
            anchor_labels, batch["uniform"], queues["labels"], queues["valid"]
        )
        num = target_z[0].shape[0]
        noise = jnp.where(jnp.eye(num, dtype=bool), -1.0, batch["noise"])
        negatives = jnp.argsort(-noise, axis=1)[:, : c["negatives"]]
        positives = [q[slots] for q in values]
        anchors = [norm(p, axis=-1) for p in large + small]
        mask = has.astype(self.dtype)
        aug = sem = inv = 0.0
        log_aug, log_sem = {}, {}
        for i, a in enumerate(anchors):
            for j in range(num_large):
                negs = target_z[j][negatives]
                log_p = self._log_p(a, target_z[j], negs)
                aug = aug - log_p[:, 0]
                log_s = jnp.stack(
                    [
                        self._log_p(a, positives[j][:, s], negs)
                        for s in range(c["positives"])
                    ],
                    1,
                )
                sem = sem - mask * jnp.sum(log_s[..., 0], -1)
                if i < num_large:
                    log_aug[i, j], log_sem[i, j] = log_p, log_s
        for i in range(num_large):
            for j in range(num_large):
                if i != j:
                    inv = inv + self._kl(log_aug[i, j], log_aug[j, i])
                    inv = inv + mask * jnp.sum(
                        self._kl(log_sem[i, j], log_sem[j, i]), -1
                    )
        normaliser = (num_large + num_small) * num_large * (1 + c["positives"])
        parts = [jnp.mean(x) / normaliser for x in (aug, sem, inv)]
        loss = (
            c["contrastive_scale"] * (parts[0] + c["alpha"] * parts[1])
            + c["invariance_scale"] * parts[2]
        )
        return loss, (state, labels, jnp.stack(parts))

    def _update_fn(self, params, state, opt_state, tparams, tstate, queues,
                   batch, learning_rate, tau):  # fmt: skip
        jax, jnp = self.jax, self.jnp
        c = self.config
        num_large = len(batch["large"])
        z, tstate = self.target.apply(
            tparams, tstate, None, jnp.concatenate(batch["large"]), True
        )
        target_z = jnp.split(
            self.helpers.l2_normalize(jax.lax.stop_gradient(z), axis=-1),
            num_large,
        )
        # Enqueue the labeled images' target projections (FIFO) first.
        n = batch["labels"].shape[0]
        size = queues["labels"].shape[0]
        slots = (queues["pointer"] + jnp.arange(n)) % size
        queues = {
            "values": [
                q.at[slots].set(t[c["unlabeled"] :])
                for q, t in zip(queues["values"], target_z)
            ],
            "labels": queues["labels"].at[slots].set(batch["labels"]),
            "valid": queues["valid"].at[slots].set(True),
            "pointer": (queues["pointer"] + n) % size,
        }
        grads, (state, labels, parts) = jax.grad(self._loss, has_aux=True)(
            params, state, target_z, queues, batch
        )
        updates, opt_state = self._optimizer(learning_rate).update(
            grads, opt_state, params
        )
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        # BYOL's EMA, after the optimizer step.
        tparams = jax.tree_util.tree_map(
            lambda t, o: t + (1.0 - tau) * (o - t),
            tparams,
            {k: v for k, v in params.items() if k in tparams},
        )
        return params, state, opt_state, tparams, tstate, queues, labels, parts

    def tau(self):
        c = self.config
        if c["ema_schedule"] == "cosine":
            return float(
                self.schedules.target_ema(
                    self.jnp.asarray(self.step_count),
                    c["momentum"],
                    c["max_steps"],
                )
            )
        return c["momentum"]

    def step(self, batch, learning_rate):
        jnp = self.jnp
        batch = {
            "large": [jnp.asarray(v, self.dtype) for v in batch["large"]],
            "small": [jnp.asarray(v, self.dtype) for v in batch["small"]],
            "labels": jnp.asarray(batch["labels"], jnp.int32),
            "noise": jnp.asarray(batch["noise"], self.dtype),
            "uniform": jnp.asarray(batch["uniform"], self.dtype),
        }
        names = (
            "params",
            "state",
            "opt_state",
            "target_params",
            "target_state",
            "queues",
        )
        *carry, labels, parts = self._update(
            *[getattr(self, name) for name in names],
            batch,
            jnp.asarray(learning_rate, self.dtype),
            jnp.asarray(self.tau(), self.dtype),
        )
        for name, value in zip(names, carry):
            setattr(self, name, value)
        self.step_count += 1
        return {"pseudo_labels": np.asarray(labels), "parts": np.asarray(parts)}

    def dump(self):
        def flat(tree):
            return {
                f"{module}/{name}": np.asarray(value)
                for module, values in tree.items()
                for name, value in values.items()
            }

        return {
            "params": flat(self.params),
            "state": flat(self.state),
            "momentum": flat(self.opt_state[1].mu),
            "target": flat(self.target_params),
            "queues": {k: _to_numpy(v) for k, v in (self.queues or {}).items()},
        }

    # -- short runs: the reference's own augmentations --------------------
    def views(self, images, rng, key, sizes):
        """Each view: a random crop (the reference's rule, in NumPy), then
        `augmentations.postprocess`, views taken in pairs (view1's and
        view2's settings, as BYOL's two views)."""
        jnp = self.jnp
        out = []
        for first in range(0, len(sizes), 2):
            pair = sizes[first : first + 2]
            crops = [
                np.stack([_random_crop(x, size, rng) for x in images])
                for size in pair
            ]
            if len(crops) == 1:
                crops = crops * 2
            key, sub = self.jax.random.split(key)
            views = self._postprocess(
                {
                    "view1": jnp.asarray(crops[0]),
                    "view2": jnp.asarray(crops[1]),
                    "labels": jnp.zeros(len(images), jnp.int32),
                },
                sub,
            )
            out.extend([views["view1"], views["view2"]][: len(pair)])
        return out, key

    def _postprocess(self, pair, key):
        if not hasattr(self, "_post"):
            self._post = self.jax.jit(self.augmentations.postprocess)
        return self._post(pair, key)

    def train(self, images, labels, unlabeled_labels, sizes, num_large):
        """One step of a short run: the reference's views, its learning
        rate schedule (`schedules.learning_schedule`, warm-up then cosine)
        and its EMA schedule; negatives' and positives' uniforms from
        NumPy."""
        c = self.config
        images = np.asarray(images, np.float32) / 255.0
        views, self._key = self.views(images, self._rng, self._key, sizes)
        total = len(images)
        learning_rate = self.schedules.learning_schedule(
            self.jnp.asarray(self.step_count),
            batch_size=total,
            base_learning_rate=c["learning_rate"] * 256 / total,
            total_steps=c["max_steps"],
            warmup_steps=c["warmup_steps"],
        )
        answer = self.step(
            {
                "large": views[:num_large],
                "small": views[num_large:],
                "labels": labels,
                "noise": self._rng.uniform(size=(total, total)),
                "uniform": self._rng.uniform(size=(total, c["positives"])),
            },
            float(learning_rate),
        )
        answer["accuracy"] = float(
            np.mean(answer["pseudo_labels"] == np.asarray(unlabeled_labels))
        )
        return answer

    def embed(self, images):
        jnp = self.jnp
        out = []
        for i in range(0, len(images), 500):
            x = jnp.asarray(images[i : i + 500], self.dtype) / 255.0
            h, _ = self._embed(self.params, self.state, x)
            out.append(np.asarray(h))
        return np.concatenate(out)


def _to_numpy(value):
    if isinstance(value, list):
        return [np.asarray(v) for v in value]
    return np.asarray(value)


def _random_crop(image, size, rng):
    """The reference's crop rule (dataset._decode_and_random_crop) on an
    HWC float image, resized bilinearly to `size`."""
    height, width = image.shape[:2]
    area = rng.uniform(0.08, 1.0) * height * width
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = min(int(round(np.sqrt(area * ratio))), width)
    h = min(int(round(np.sqrt(area / ratio))), height)
    top = rng.integers(0, height - h + 1)
    left = rng.integers(0, width - w + 1)
    crop = image[top : top + h, left : left + w]
    return _resize(crop, size)


def _resize(image, size):
    h, w = image.shape[:2]
    ys = (np.arange(size) + 0.5) * h / size - 0.5
    xs = (np.arange(size) + 0.5) * w / size - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None, None]
    wx = np.clip(xs - x0, 0, 1)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def worker():
    """Serves the reference side over stdin/stdout (length-prefixed
    pickles); nothing else may write to stdout."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    missing = missing_reference_packages()
    if missing:
        send(
            out,
            {
                "error": "missing package(s) "
                + ", ".join(missing)
                + " (pip install them into this environment)"
            },
        )
        return
    send(out, {"ready": True})
    model = None
    while True:
        request = receive(sys.stdin.buffer)
        if request is None:
            return
        try:
            command = request.pop("command")
            if command == "init":
                config = request["config"]
                same = model is not None and dict(
                    model.config, seed=config["seed"]
                ) == dict(config)
                if same:  # keeps the compiled step
                    model.reset(config["seed"])
                else:
                    model = ReferenceStep(config)
                answer = model.dump()
            elif command == "queues":
                model.set_queues(**request["queues"])
            elif command == "random_queues":
                model.random_queues(**request["args"])
                answer = {}
            elif command == "step":
                answer = model.step(request["batch"], request["lr"])
            elif command == "dump":
                answer = model.dump()
            elif command == "views":
                answer = {"views": model.views(**request["args"])}
            elif command == "train":
                answer = model.train(**request["args"])
            elif command == "embed":
                answer = {"embedding": model.embed(request["images"])}
            else:
                answer = {"error": f"unknown command {command!r}"}
        except Exception as error:  # reported to the driver
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(error).__name__}: {error}"}
        send(out, answer)


# --- keras-ssl's side ----------------------------------------------------
def _encoder_names(their):
    """keras-ssl ResNet weight path -> Haiku (module, name), for ResNet-18."""
    names = {"stem_conv1/kernel": "encoder/~/initial_conv/w"}
    bn = {"gamma": "scale", "beta": "offset"}

    def put_bn(ours, theirs):
        for a, b in bn.items():
            names[f"{ours}/{a}"] = f"{theirs}/{b}"

    put_bn("stem_bn1", "encoder/~/initial_batchnorm")
    for group in range(4):
        for block in range(2):
            theirs = f"encoder/~/block_group_{group}/~/block_{block}/~/"
            ours = f"stage{group + 1}_block{block + 1}_"
            for i in range(2):
                names[f"{ours}conv{i + 1}/kernel"] = f"{theirs}conv_{i}/w"
                put_bn(f"{ours}bn{i + 1}", f"{theirs}batchnorm_{i}")
            if block == 0:
                names[f"{ours}shortcut_conv/kernel"] = (
                    f"{theirs}shortcut_conv/w"
                )
                put_bn(f"{ours}shortcut_bn", f"{theirs}shortcut_batchnorm")
    return {k: v for k, v in names.items() if v in their}


def _head_names(head, module):
    """keras-ssl ProjectionHead variables -> Haiku MLP's (linear,
    batch_norm, linear_1)."""
    dense0, norm, _ = head.layers_of(0)
    dense1 = head.layers_of(1)[0]
    return {
        id(dense0.kernel): f"{module}/linear/w",
        id(dense0.bias): f"{module}/linear/b",
        id(norm.gamma): f"{module}/batch_norm/scale",
        id(norm.beta): f"{module}/batch_norm/offset",
        id(dense1.kernel): f"{module}/linear_1/w",
    }


def variable_names(encoder, heads, theirs):
    """id(keras variable) -> Haiku name, for an encoder and its heads
    ({module name: ProjectionHead}); `theirs`: the Haiku names."""
    encoder_names = _encoder_names(theirs)
    names = {}
    for variable in encoder.weights:
        for ours, name in encoder_names.items():
            if variable.path == ours or variable.path.endswith("/" + ours):
                names[id(variable)] = name
    for module, head in heads.items():
        names.update(_head_names(head, module))
    return names


def build_ours(args, config):
    import keras

    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.layers import Views
    from keras_ssl.optimizers import LARS
    from keras_ssl.optimizers import WarmupCosineDecay

    if args.float64:
        keras.config.set_floatx("float64")

    def head(name):
        # Aligned with the reference's MLP: no bias in the last layer,
        # BatchNorm decay 0.9 and epsilon 1e-5 (keras-ssl's default head
        # has a last bias and Keras's 0.99 / 1e-3; see the docs).
        return ProjectionHead(
            num_layers=2,
            output_dim=OUTPUT,
            hidden_dim=HIDDEN,
            bn_momentum=0.9,
            bn_epsilon=1e-5,
            use_bias=[True, False],
            batch_norm=[True, False],
            name=name,
        )

    encoder = ResNet(
        depth=18,
        width_multiplier=args.width,
        conv_padding="same",
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        input_shape=(None, None, 3),
    )
    specs = Views.preset_specs("semppl_imagenet", size=args.image_size)
    large = [s for s in specs if s.size == specs[0].size]
    small = [s for s in specs if s.size != specs[0].size]
    views = Views(
        large[: args.large_views] + small[: args.small_views],
        seed=config["seed"],
    )
    model = _pretrainer_class()(
        encoder,
        num_classes=config["num_classes"],
        projector=head("projector"),
        predictor=head("predictor"),
        views=views,
        queue_size=args.queue,
        k=config["k"],
        num_semantic_positives=args.positives,
        num_negatives=args.negatives,
        temperature=config["temperature"],
        alpha=config["alpha"],
        invariance_scale=args.invariance_scale,
        contrastive_scale=config["contrastive_scale"],
        momentum=args.momentum,
        target_batch_statistics=True,
        seed=config["seed"],
    )
    learning_rate = args.learning_rate
    if args.short_runs:
        # The presets' schedule: warm-up over 10% of the steps, then cosine.
        learning_rate = WarmupCosineDecay(
            args.learning_rate,
            total_steps=args.steps,
            warmup_steps=config["warmup_steps"],
        )
    model.compile(
        optimizer=LARS(
            learning_rate=learning_rate,
            momentum=0.9,
            weight_decay=args.weight_decay,
            eeta=1e-3,
            exclude_rank_1=True,
        ),
        # Eager steps: the views are set from outside before each one.
        run_eagerly=not args.short_runs,
    )
    return model


def _pretrainer_class():
    from keras_ssl.models import SemPPLPretrainer

    class FixedViewsPretrainer(SemPPLPretrainer):
        """SemPPL's step on views made outside it (`fixed_views`): the
        reference's views come from its input pipeline, not the step."""

        fixed_views = None

        def _embed(self, unlabeled, labeled, training):
            if self.fixed_views is None:
                return super()._embed(unlabeled, labeled, training)
            large = [self.fixed_views[i] for i in self.large_views]
            small = [self.fixed_views[i] for i in self.small_views]
            return (
                self._online(large, training),
                self._online(small, training),
                self._target(large, training),
            )

    return FixedViewsPretrainer


def step_config(args):
    return {
        "semppl_dir": args.semppl_dir,
        "float64": args.float64,
        "width": args.width,
        "image_size": args.image_size,
        "seed": args.seed,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum,
        "ema_schedule": args.ema_schedule,
        "max_steps": args.steps,
        "learning_rate": args.learning_rate,
        "warmup_steps": int(round(0.1 * args.steps)) if args.short_runs else 0,
        "invariance_scale": args.invariance_scale,
        "contrastive_scale": 0.3,
        "alpha": 0.2,
        "temperature": 0.2,
        "k": 1,
        "num_classes": 10,
        "unlabeled": args.unlabeled,
        "negatives": args.negatives,
        "positives": args.positives,
    }


def load_reference_weights(model, dump):
    """Writes the reference's initial online weights into the online and
    target networks (the reference's target starts as the online copy)."""
    pairs = _pairs(model, dump["params"])
    assigned = set()
    for ours, name, _ in pairs:
        value = dump["params"][name]
        ours.assign(np.reshape(value, ours.shape).astype(ours.dtype))
        assigned.add(name)
    unused = set(dump["params"]) - assigned
    if unused:
        raise RuntimeError(f"reference weights left unassigned: {unused}")
    for target, online in zip(
        model.target_encoder.weights + model.target_projector.weights,
        model.encoder.weights + model.projector.weights,
    ):
        target.assign(online)


def _pairs(model, theirs):
    """(our online variable, Haiku name, our target variable or None)."""
    online = variable_names(
        model.encoder,
        {"projector": model.projector, "predictor": model.predictor},
        theirs,
    )
    target = variable_names(
        model.target_encoder, {"projector": model.target_projector}, theirs
    )
    by_name = {}
    for variable in model.target_encoder.weights + (
        model.target_projector.weights
    ):
        if id(variable) in target:
            by_name[target[id(variable)]] = variable
    return [
        (v, online[id(v)], by_name.get(online[id(v)]))
        for v in model.encoder.weights
        + model.projector.weights
        + model.predictor.weights
        if id(v) in online
    ]


def queue_contents(model):
    values = [np.asarray(q.queue) for q in model.queues]
    first = model.queues[0]
    return {
        "values": values,
        "labels": np.asarray(first.labels),
        "valid": np.asarray(first.valid) > 0,
        "pointer": int(np.asarray(first.pointer)),
    }


def _difference(ours, theirs):
    """(max |ours - theirs| / max |theirs|, max |ours - theirs|,
    max |theirs|)."""
    ours = np.asarray(ours, np.float64).reshape(-1)
    theirs = np.asarray(theirs, np.float64).reshape(-1)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    return (diff / scale if scale > 0 else diff), diff, scale


def compare(model, dump, learning_rate):
    """Rows (kind, name, relative difference, absolute, scale)."""
    optimizer = model.optimizer
    rows = []

    def add(kind, name, ours, theirs):
        rows.append((kind, name) + _difference(ours, theirs))

    for ours, name, target in _pairs(model, dump["params"]):
        add("weight", name, ours, dump["params"][name])
        slot = optimizer._momentums[optimizer._get_variable_index(ours)]
        # keras-ssl's velocity holds the learning rate (SimCLR's LARS);
        # the reference's momentum does not: v = lr * mu at a constant rate.
        add("LARS slot", name, slot, learning_rate * dump["momentum"][name])
        if target is not None:
            add("EMA target", name, target, dump["target"][name])
    queues = queue_contents(model)
    theirs = dump["queues"]
    for i, (a, b) in enumerate(zip(queues["values"], theirs["values"])):
        add("queue", f"values_{i}", a, b)
    for key in ("labels", "valid", "pointer"):
        mismatches = np.sum(np.asarray(queues[key]) != theirs[key])
        rows.append(("queue", key, float(mismatches), 0.0, 0.0))
    return rows


def print_rows(rows, after):
    print(
        f"\n== after {after} step(s): max |ours - reference| / max "
        "|reference| (absolute, max |reference|); queue labels/valid/"
        "pointer: entries that differ"
    )
    for kind, name, relative, absolute, scale in rows:
        print(
            f"{kind:10s} {name:58s} {relative:.2e} ({absolute:.1e}, "
            f"{scale:.1e})"
        )
    for kind in dict.fromkeys(row[0] for row in rows):
        worst = max(
            (row[2], row[1])
            for row in rows
            if row[0] == kind and not is_pre_norm_bias(row[1])
        )
        print(f"worst {kind}: {worst[0]:.2e} ({worst[1]})")
    zero = [row for row in rows if is_pre_norm_bias(row[1])]
    if zero:
        print(
            "biases followed by BatchNorm (their gradient is 0 in exact "
            "arithmetic, so both sides hold round-off): largest absolute "
            f"difference {max(row[3] for row in zero):.1e}, largest value "
            f"{max(row[4] for row in zero):.1e}"
        )


def is_pre_norm_bias(name):
    """The heads' first bias: BatchNorm follows, so it gets no gradient."""
    return name.endswith("/linear/b")


def _replay_draws(state, shapes, dtype):
    """The uniforms keras-ssl's step drew from its seed generator, drawn
    again from the generator's state before the step (negatives' noise,
    then the semantic positives')."""
    import keras

    generator = keras.random.SeedGenerator(0)
    generator.state.assign(state)
    return [
        np.asarray(keras.random.uniform(shape, seed=generator, dtype=dtype))
        for shape in shapes
    ]


def parity(args):
    import keras

    config = step_config(args)
    reference = Reference(args)
    try:
        dump = reference.ask("init", config=config)
        model = build_ours(args, config)
        load_reference_weights(model, dump)
        reference.ask("queues", queues=queue_contents(model))
        rng = np.random.default_rng(args.seed)
        u, n = args.unlabeled, args.labeled
        total = u + n
        dtype = keras.config.floatx()
        sizes = [args.image_size] * args.large_views + [
            args.small_size
        ] * args.small_views
        for step in range(args.steps):
            views = [
                rng.uniform(size=(total, s, s, 3)).astype(dtype) for s in sizes
            ]
            labels = rng.integers(0, 4, size=n).astype("int32")
            state = np.asarray(model.seed_generator.state)
            noise, uniform = _replay_draws(
                state, [(total, total), (total, args.positives)], dtype
            )
            answer = reference.ask(
                "step",
                batch={
                    "large": views[: args.large_views],
                    "small": views[args.large_views :],
                    "labels": labels,
                    "noise": noise,
                    "uniform": uniform,
                },
                lr=args.learning_rate,
            )
            model.fixed_views = [keras.ops.convert_to_tensor(v) for v in views]
            # The reference's pseudo-labels as the unlabeled images' "true"
            # labels: keras-ssl's pseudo-label accuracy is then agreement.
            logs = model.train_on_batch(
                {
                    "unlabeled": np.zeros((u, 2, 2, 3), "float32"),
                    "labeled": np.zeros((n, 2, 2, 3), "float32"),
                    "labels": labels,
                    "unlabeled_labels": answer["pseudo_labels"],
                },
                return_dict=True,
            )
            # keras-ssl moves its target at the start of a step; the
            # reference after it. Compare after that pending update.
            saved = [w.numpy() for w in _target_weights(model)]
            model._update_target_network()
            rows = compare(model, reference.ask("dump"), args.learning_rate)
            for w, value in zip(_target_weights(model), saved):
                w.assign(value)
            if step + 1 in (1, args.steps):
                print_rows(rows, step + 1)
            worst = max(
                r[2]
                for r in rows
                if r[0] == "weight" and not is_pre_norm_bias(r[1])
            )
            ours_parts = [
                float(logs[k])
                for k in (
                    "augmentation_loss",
                    "semantic_loss",
                    "invariance_loss",
                )
            ]
            print(
                f"step {step + 1}: pseudo-labels agree "
                f"{float(logs['pseudo_label_accuracy']):.0%}, loss parts "
                f"ours {np.round(ours_parts, 6)} reference "
                f"{np.round(answer['parts'], 6)}, worst weight {worst:.1e}",
                flush=True,
            )
        return rows
    finally:
        reference.close()


def _target_weights(model):
    return model.target_encoder.weights + model.target_projector.weights


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker()
        return
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.short_runs:
        short_runs(args)
    else:
        parity(args)


def load_cifar(args):
    """`--images` shuffled training images, `--labels-per-class` of them
    labeled, and 1,000 test images."""
    folder = pathlib.Path(args.data_dir)
    train, test = np.load(folder / "train.npz"), np.load(folder / "test.npz")
    rng = np.random.default_rng(1234)
    pick = rng.permutation(len(train["y"]))[: args.images]
    x, y = train["x"][pick], train["y"][pick].astype("int32")
    labeled = np.concatenate(
        [np.flatnonzero(y == c)[: args.labels_per_class] for c in range(10)]
    )
    test_pick = rng.permutation(len(test["y"]))[:1000]
    return {
        "x": x,
        "y": y,
        "labeled": labeled,
        "test_x": test["x"][test_pick],
        "test_y": test["y"][test_pick].astype("int32"),
    }


def knn_accuracy(bank, bank_labels, queries, query_labels, k=20):
    """Cosine k-NN, majority vote (ties to the lowest class)."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    nearest = np.argsort(-queries @ bank.T, axis=1)[:, :k]
    votes = np.zeros((len(queries), 10))
    for column in range(k):
        votes[np.arange(len(queries)), bank_labels[nearest[:, column]]] += 1
    return float(np.mean(np.argmax(votes, 1) == query_labels))


def _batches(args, data, seed):
    """The same image indices for both sides: unlabeled images from all of
    them, labeled ones from the labeled subset."""
    rng = np.random.default_rng(seed)
    for _ in range(args.steps):
        yield (
            rng.choice(len(data["y"]), args.unlabeled, replace=False),
            rng.choice(data["labeled"], args.labeled, replace=False),
        )


def _run_reference(reference, args, data, seed, sizes, start):
    config = dict(step_config(args), seed=seed)
    reference.ask("init", config=config)
    reference.ask(
        "random_queues",
        args={"num_large": args.large_views, "size": args.queue},
    )

    def embed(x):
        return reference.ask("embed", images=x)["embedding"]

    start(embed)
    curve, accuracy = [], []
    _TIMES.clear()
    for step, (u, n) in enumerate(_batches(args, data, seed)):
        _TIMES.append(time.time())
        answer = reference.ask(
            "train",
            args={
                "images": np.concatenate([data["x"][u], data["x"][n]]),
                "labels": data["y"][n],
                "unlabeled_labels": data["y"][u],
                "sizes": sizes,
                "num_large": args.large_views,
            },
        )
        accuracy.append(answer["accuracy"])
        parts = answer["parts"]
        curve.append(_loss(args, parts))
    return curve, accuracy, embed


_TIMES = []  # start time of each step of the current short run


def _loss(args, parts):
    return 0.3 * (parts[0] + 0.2 * parts[1]) + args.invariance_scale * parts[2]


def _run_ours(args, data, seed, sizes, start):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_ours(args, dict(step_config(args), seed=seed))

    def embed(x):
        x = np.asarray(x, keras.config.floatx()) / 255.0
        return np.asarray(model.encoder.predict(x, batch_size=500, verbose=0))

    start(embed)
    curve, accuracy = [], []
    _TIMES.clear()
    for u, n in _batches(args, data, seed):
        _TIMES.append(time.time())
        logs = model.train_on_batch(
            {
                "unlabeled": data["x"][u],
                "labeled": data["x"][n],
                "labels": data["y"][n],
                "unlabeled_labels": data["y"][u],
            },
            return_dict=True,
        )
        curve.append(float(logs["loss"]))
        accuracy.append(float(logs["pseudo_label_accuracy"]))
    return curve, accuracy, embed


def _knn(embed, data):
    return knn_accuracy(
        embed(data["x"]), data["y"], embed(data["test_x"]), data["test_y"]
    )


def short_runs(args):
    data = load_cifar(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    scales = [float(s) for s in args.invariance_scales.split(",")]
    sides = args.sides.split(",")
    from keras_ssl.layers import Views

    specs = Views.preset_specs("semppl_imagenet", size=args.image_size)
    large = [s.size for s in specs if s.size == specs[0].size]
    small = [s.size for s in specs if s.size != specs[0].size]
    sizes = [
        int(np.atleast_1d(s)[0])
        for s in large[: args.large_views] + small[: args.small_views]
    ]
    reference = Reference(args) if "reference" in sides else None
    every = args.log_every
    results = []
    try:
        for scale in scales:
            args.invariance_scale = scale
            for seed in seeds:
                for side in sides:
                    start = time.time()
                    at_start = []

                    def knn_now(embed, at_start=at_start):
                        at_start.append(_knn(embed, data))

                    if side == "reference":
                        run = _run_reference(
                            reference, args, data, seed, sizes, knn_now
                        )
                    else:
                        run = _run_ours(args, data, seed, sizes, knn_now)
                    curve, accuracy, embed = run
                    per_step = (time.time() - _TIMES[1]) / max(
                        1, len(_TIMES) - 1
                    )
                    knn = _knn(embed, data)
                    points = [
                        float(np.mean(curve[max(0, i - every) : i]))
                        for i in range(every, len(curve) + 1, every)
                    ]
                    row = {
                        "side": side,
                        "lambda": scale,
                        "seed": seed,
                        "loss": points,
                        "pseudo": float(np.mean(accuracy[-every:])),
                        "knn": knn,
                        "seconds": time.time() - start,
                    }
                    results.append(row)
                    print(
                        f"{side:9s} lambda={scale:g} seed={seed} loss (mean "
                        f"of each {every} steps) "
                        + " ".join(f"{p:.3f}" for p in points)
                        + f" | pseudo-labels (last {every}) "
                        f"{row['pseudo']:.1%} | k-NN {at_start[0]:.1%} -> "
                        f"{knn:.1%} | "
                        f"{row['seconds']:.0f} s ({per_step:.2f} s per step "
                        "after the first)",
                        flush=True,
                    )
    finally:
        if reference is not None:
            reference.close()
    print("\nside       lambda  pseudo-labels    k-NN (mean ± std over seeds)")
    for scale in scales:
        for side in sides:
            rows = [
                r for r in results if r["side"] == side and r["lambda"] == scale
            ]
            pseudo = [r["pseudo"] for r in rows]
            knn = [r["knn"] for r in rows]
            print(
                f"{side:9s} {scale:6g}  {np.mean(pseudo):.1%} ± "
                f"{np.std(pseudo):.1%}   {np.mean(knn):.1%} ± {np.std(knn):.1%}"
            )
    return results


if __name__ == "__main__":
    main()
