"""What `keras_ssl.evaluation.KNNMonitor` adds to an epoch of pretraining.

One epoch of a digits-sized SimCLRv2 pretrainer (the sizes of
`SimCLRv2Config.digits()`: 16-px images, a CIFAR-stem ResNet-18 at a
quarter of the width, a 3-layer head to 128 dims, batch 128, two
`simclr_cifar` views with crops of at least 30%), on scikit-learn's 1,797
digits (the first 1,437 for training), timed in alternation with and
without the monitor evaluating at the end of the epoch: k-NN (k = 200,
τ = 0.1) of 10 labeled images per class, measured on the 360 held-out
images (`--cross-validate`: 5-fold on the labeled images instead); and
the monitor's evaluation alone.

    PYTHONPATH=. python benchmarks/knn_monitor_cost.py --cycles 5

Prints a markdown table (medians and ranges over cycles of seconds per
epoch, and per-cycle ratios) with the command and the machine.
"""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from alternate import alternate  # noqa: E402
from alternate import machine  # noqa: E402
from alternate import report  # noqa: E402

import keras_ssl  # noqa: E402
from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.evaluation import KNNMonitor  # noqa: E402
from keras_ssl.layers import ProjectionHead  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.models import SimCLRv2Pretrainer  # noqa: E402


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
    parser.add_argument("--cross-validate", action="store_true")
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = digits()
    x_labeled, y_labeled = labeled_subset(x_train, y_train)
    model = pretrainer()
    monitor = KNNMonitor(
        x_labeled,
        y_labeled,
        validation_data=None if args.cross_validate else (x_test, y_test),
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
    print(f"k-NN accuracy after the last epoch: {monitor.results[0]:.3f}")
    print(machine())


if __name__ == "__main__":
    main()
