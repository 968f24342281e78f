"""SemPPL's overhead: queue + k-NN + semantic positives, share of a step.

SemPPL's Appendix F reports that its additions to RELICv2 take 8.5% of the
step time (k-NN and queue 5.6%, the semantic-positive loss 2.9%) at
`B = 4096`, `C = 20·B` on TPUs. This script measures the same share for
`keras_ssl.models.SemPPLPretrainer` (TensorFlow backend) at a given global
batch `B` (default 256) with queues of `C = 20·B`:

1. **Whole-step difference.** The compiled `train_step` of the full model
   and of the same model with the SemPPL parts switched off (no enqueue,
   no k-NN, no semantic positives: RELICv2 with SemPPL's views and
   negatives); `overhead = (t_full - t_base) / t_full`.
2. **Components**, each its own `tf.function` at the step's shapes, as a
   share of `t_full`: enqueueing the labeled target projections into the
   `L` queues; view voting (`L^2` k-NN lookups) and the majority vote;
   drawing the semantic positives and gathering them from the queues; and
   the semantic-positive terms of the loss, forward and backward (the loss
   with them minus the loss without them).

Everything is timed in alternation (`benchmarks/alternate.py`): each
cycle (`--rounds` of them, after `--warmup` untimed ones) runs the full
step, the base step and every component `--steps` times each, in that
order, so each share is taken within a cycle; the tables give the median
share and its range over the cycles, in wall time and in CPU time (the
process's time over all threads).

The share depends on everything else in the step: a small encoder on a CPU
(the default, so that it runs here in minutes) makes the encoder cheap and
the share large; ResNet-50 on an accelerator, as in the paper, the
opposite. `--backbone resnet18|resnet50` and `--image-size` set the
encoder; `--hidden-dim`/`--projection-dim` the MLPs (paper: 4096/256).

Usage (from the repository root):

    PYTHONPATH=. python benchmarks/semppl_overhead.py
    PYTHONPATH=. python benchmarks/semppl_overhead.py --backbone resnet18 \\
        --image-size 32 --rounds 3 --steps 3

Prints a markdown table and, with `--json PATH`, writes the numbers.
"""

import argparse
import json
import os
import statistics
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

# Run as a script from a checkout: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import alternate  # noqa: E402
from alternate import machine  # noqa: E402
from alternate import report  # noqa: E402

from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.losses.semppl import majority_vote  # noqa: E402
from keras_ssl.losses.semppl import sample_semantic_positive_indices  # noqa: E402
from keras_ssl.losses.semppl import semppl  # noqa: E402
from keras_ssl.losses.semppl import view_voting  # noqa: E402
from keras_ssl.models import SemPPLPretrainer  # noqa: E402


class RELICv2Baseline(SemPPLPretrainer):
    """The same step without SemPPL's additions (what it adds to RELICv2)."""

    def _update_queues(self, targets, labels, num_unlabeled):
        pass

    def _anchor_labels(
        self, online_large, values, queue_labels, valid, labels, num_unlabeled
    ):
        return labels, None

    def _semantic_positives(
        self, anchors, anchor_labels, values, queue_labels, valid, num_global
    ):
        return None, ops.ones(ops.shape(anchors), "bool")


def tiny_encoder(width):
    inputs = keras.Input((None, None, 3))
    x = inputs
    for channels in (width, 2 * width):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="tiny")


def make_encoder(args):
    if args.backbone == "tiny":
        return tiny_encoder(args.width)
    depth = int(args.backbone.removeprefix("resnet"))
    stem = "cifar" if args.image_size <= 64 else "imagenet"
    return ResNet(depth=depth, stem=stem, input_shape=(None, None, 3))


def mlp(hidden, output, input_dim):
    network = keras.Sequential(
        [
            keras.layers.Dense(hidden),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(output),
        ]
    )
    network.build((None, input_dim))
    return network


def make_model(cls, args):
    keras.utils.set_random_seed(0)
    encoder = make_encoder(args)
    features = int(encoder.output.shape[-1])
    model = cls(
        encoder,
        num_classes=args.num_classes,
        projector=mlp(args.hidden_dim, args.projection_dim, features),
        predictor=mlp(
            args.hidden_dim, args.projection_dim, args.projection_dim
        ),
        views=Views.from_preset("semppl_imagenet", size=args.image_size),
        queue_size=args.queue_multiplier * args.batch_size,
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.optimizer.build(model.trainable_variables)
    return model


def make_batch(args):
    rng = np.random.default_rng(0)
    size = args.image_size
    unlabeled = args.batch_size - args.labeled
    return {
        "unlabeled": tf.constant(
            rng.integers(0, 256, (unlabeled, size, size, 3)), tf.uint8
        ),
        "labeled": tf.constant(
            rng.integers(0, 256, (args.labeled, size, size, 3)), tf.uint8
        ),
        "labels": tf.constant(
            rng.integers(0, args.num_classes, (args.labeled,)), tf.int32
        ),
    }


def repeated(fn, steps):
    """A contender running `fn` `steps` times, each waiting for its result."""

    def run():
        for _ in range(steps):
            keras.tree.map_structure(
                lambda x: x.numpy() if hasattr(x, "numpy") else x, fn()
            )

    return run


def component_fns(model, args):
    """The SemPPL parts of a step, each alone, at the step's shapes."""
    rng = np.random.default_rng(1)
    dim = args.projection_dim
    num_large = len(model.large_views)
    num_small = len(model.small_views)
    unlabeled = args.batch_size - args.labeled
    positives = model.num_semantic_positives

    def unit(*shape):
        x = rng.normal(size=shape).astype("float32")
        return tf.constant(x / np.linalg.norm(x, axis=-1, keepdims=True))

    labeled_targets = [unit(args.labeled, dim) for _ in range(num_large)]
    labels = tf.constant(
        rng.integers(0, args.num_classes, (args.labeled,)), tf.int32
    )
    online = [unit(args.batch_size, dim) for _ in range(num_large)]
    small = [unit(args.batch_size, dim) for _ in range(num_small)]
    targets = [unit(args.batch_size, dim) for _ in range(num_large)]
    negatives = tf.constant(
        rng.integers(0, args.batch_size, (args.batch_size, 10)), tf.int32
    )
    anchor_labels = tf.constant(
        rng.integers(0, args.num_classes, (args.batch_size,)), tf.int32
    )
    uniform = tf.constant(
        rng.uniform(size=(args.batch_size, positives)), tf.float32
    )

    @tf.function
    def enqueue():
        for queue, z in zip(model.queues, labeled_targets):
            queue.enqueue(z, labels)
        return model.queues[0].pointer.value

    @tf.function
    def knn():
        values = [q.read()[0] for q in model.queues]
        _, valid, queue_labels = model.queues[0].read()
        votes = view_voting(
            [o[:unlabeled] for o in online],
            values,
            queue_labels,
            valid,
            args.num_classes,
            k=model.k,
        )
        return majority_vote(votes)

    @tf.function
    def sample():
        values = [q.read()[0] for q in model.queues]
        _, valid, queue_labels = model.queues[0].read()
        slots, has = sample_semantic_positive_indices(
            uniform, anchor_labels, queue_labels, valid, args.num_classes
        )
        return [ops.take(v, slots, axis=0) for v in values], has

    sampled, has = sample()

    def loss_grad(with_positives):
        @tf.function
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(online + small)
                loss = semppl(
                    online,
                    targets,
                    negatives,
                    online_small=small,
                    semantic_positives=sampled if with_positives else None,
                    semantic_mask=has if with_positives else None,
                )
            return tape.gradient(loss, online + small)

        return fn

    return {
        "enqueue": enqueue,
        "knn": knn,
        "sample": sample,
        "loss_with": loss_grad(True),
        "loss_without": loss_grad(False),
    }


# What each share is: a contender, or a difference of two, over `full`.
SHARES = {
    "whole-step difference (full - RELICv2 base)": ("full", "base"),
    "queue: enqueue into L queues": ("enqueue",),
    "k-NN: view voting + majority vote": ("knn",),
    "semantic positives: draw + gather": ("sample",),
    "semantic loss terms (fwd + bwd)": ("loss_with", "loss_without"),
}
PARTS = [name for name in SHARES if not name.startswith("whole")]


def shares(results, kind):
    """Per-cycle shares of the full step, by `SHARES` entry."""
    cycles = range(len(results["full"][kind]))
    out = {}
    for label, names in SHARES.items():
        out[label] = []
        for i in cycles:
            seconds = results[names[0]][kind][i]
            if len(names) == 2:
                seconds -= results[names[1]][kind][i]
            out[label].append(seconds / results["full"][kind][i])
    out["sum of the four parts"] = [
        sum(values) for values in zip(*(out[label] for label in PARTS))
    ]
    return out


def _spread(values):
    return (
        f"{100 * statistics.median(values):.1f}% "
        f"({100 * min(values):.1f}% to {100 * max(values):.1f}%)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--labeled", type=int, default=32)
    parser.add_argument("--queue-multiplier", type=int, default=20)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument(
        "--backbone",
        default="tiny",
        choices=["tiny", "resnet18", "resnet34", "resnet50"],
    )
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--jit", action="store_true", help="XLA-compile")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--steps", type=int, default=3, help="calls per contender per cycle"
    )
    parser.add_argument("--rounds", type=int, default=5, help="cycles")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    batch = make_batch(args)
    contenders = {}
    for name, cls in (("full", SemPPLPretrainer), ("base", RELICv2Baseline)):
        model = make_model(cls, args)
        if name == "full":
            components = component_fns(model, args)
        step = tf.function(model.train_step, jit_compile=args.jit)
        contenders[name] = repeated(
            lambda step=step: step(batch)["loss"], args.steps
        )
    for name, fn in components.items():
        contenders[name] = repeated(fn, args.steps)
    # Every function runs at least once untimed, once everything exists:
    # the first call traces, and a step first run after another model was
    # built ran seconds slower once more (seen here).
    results = alternate(
        contenders, cycles=args.rounds, warmup=max(args.warmup, 1)
    )
    for times in results.values():
        for kind in ("wall", "cpu"):
            times[kind] = [t / args.steps for t in times[kind]]
    share = {kind: shares(results, kind) for kind in ("wall", "cpu")}

    print(machine())
    print(
        f"B={args.batch_size} ({args.labeled} labeled), "
        f"C={args.queue_multiplier}·B={args.queue_multiplier * args.batch_size}"
        f", K={args.num_classes}, backbone={args.backbone}, "
        f"{args.image_size}px, MLP {args.hidden_dim}/{args.projection_dim}, "
        f"views 4 large + 2 small, jit={args.jit}; {args.rounds} cycles of "
        f"{args.steps} calls each; TF {tf.__version__}, "
        f"Keras {keras.__version__}"
    )
    print(report(results, baseline="full", title="function (s per call)"))
    print()
    print("| part | share of the full step (wall) | share (CPU) |")
    print("| --- | ---: | ---: |")
    for label in share["wall"]:
        print(
            f"| {label} | {_spread(share['wall'][label])} | "
            f"{_spread(share['cpu'][label])} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args), "times_s": results, "shares": share},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
