"""What `keras_ssl.evaluation.KNNMonitor` adds to an epoch of pretraining.

One epoch of a digits-sized SimCLRv2 pretrainer (the sizes of
`SimCLRv2Config.digits()`: 16-px images, a CIFAR-stem ResNet-18 at a
quarter of the width, a 3-layer head to 128 dims, batch 128, two
`simclr_cifar` views with crops of at least 30%), on scikit-learn's 1,797
digits (the first 1,437 for training), timed in alternation with and
without the monitor evaluating at the end of the epoch; and the monitor's
evaluation alone. The monitor is the recipes' (`recipes/stages.py`,
`knn_monitor`): k-NN (k = 200, τ = 0.1) of the pretrainer's `"embedding"`
output for 10 labeled images per class, 5-fold cross-validated on them,
in one batch of all 100 (`--held-out`: measured on the 360 held-out images
instead, as the report does after pretraining), in the recipes' precision
(`--precision`, default `auto`: bfloat16 where the hardware computes in
it natively).

    PYTHONPATH=. python benchmarks/knn_monitor_cost.py --cycles 5

Prints a markdown table (medians and ranges over cycles of seconds per
epoch, and per-cycle ratios), the monitor's share of an epoch per
evaluation and, for `--every N` (the recipes' `knn_monitor_every`),
averaged over the N epochs between evaluations, with the command and
the machine.
"""

import argparse
import dataclasses
import os
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from alternate import alternate  # noqa: E402
from alternate import machine  # noqa: E402
from alternate import ratios  # noqa: E402
from alternate import report  # noqa: E402

import keras_ssl  # noqa: E402
from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.evaluation import KNNMonitor  # noqa: E402
from keras_ssl.layers import ProjectionHead  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.models import SimCLRv2Pretrainer  # noqa: E402
from keras_ssl.recipes import precision  # noqa: E402


def digits():
    """Digits as 16-px RGB uint8 (each pixel doubled), labels, split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255 / 16)).astype("uint8")
    x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    x = np.repeat(x[..., None], 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], bunch.target[order].astype("int32")
    return x[:1437], y[:1437], x[1437:], y[1437:]


def labeled_subset(x, y, per_class=10):
    index = np.concatenate(
        [np.flatnonzero(y == c)[:per_class] for c in range(10)]
    )
    return x[index], y[index]


def pretrainer():
    views = [
        dataclasses.replace(spec, scale=(0.3, 1.0))
        for spec in Views.preset_specs("simclr_cifar", size=16)
    ]
    model = SimCLRv2Pretrainer(
        ResNet(
            depth=18,
            width_multiplier=0.25,
            stem="cifar",
            input_shape=(16, 16, 3),
        ),
        head=ProjectionHead(num_layers=3, output_dim=128),
        views=Views(views, seed=0),
        temperature=0.5,
        memory_size=0,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(1.0, weight_decay=1e-6))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="The recipes' precision (default: auto, as they run).",
    )
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be >= 1. Received: {args.every}")
    choice = precision.detect(args.precision)
    keras.config.set_dtype_policy(choice.policy)
    print(choice.message())
    x_train, y_train, x_test, y_test = digits()
    x_labeled, y_labeled = labeled_subset(x_train, y_train)
    model = pretrainer()
    monitor = KNNMonitor(
        x_labeled,
        y_labeled,
        validation_data=(x_test, y_test) if args.held_out else None,
        output="embedding",
        num_classes=10,
        folds=5,
        # The recipes' batch (`reports.evaluation_batch`): all 100.
        batch_size=min(256, len(y_labeled)),
    )

    def epoch(callbacks):
        return lambda: model.fit(
            x_train, batch_size=128, epochs=1, verbose=0, callbacks=callbacks
        )

    monitor.set_model(model)
    results = alternate(
        {
            "epoch": epoch([]),
            "epoch + KNNMonitor": epoch([monitor]),
            "KNNMonitor.evaluate alone": monitor.evaluate,
        },
        cycles=args.cycles,
        warmup=1,
    )
    print(report(results, baseline="epoch", title="one epoch"))
    for kind in ("wall", "cpu"):
        shares = [
            r - 1 for r in ratios(results, "epoch + KNNMonitor", "epoch", kind)
        ]
        print(
            f"monitor's share of an epoch ({kind}): median "
            f"{statistics.median(shares):.1%} per evaluation "
            f"({min(shares):.1%} to {max(shares):.1%}); every {args.every} "
            f"epochs: {statistics.median(shares) / args.every:.1%} per epoch"
        )
    print(f"k-NN accuracy after the last epoch: {monitor.results[0]:.3f}")
    print(machine())


if __name__ == "__main__":
    main()
