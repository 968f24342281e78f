"""A short real-data run of PAWS or SemPPL on CIFAR-10 with 4,000 labels.

The run pretrains a CIFAR-stem ResNet-18 (width `--width`) with the
method's CIFAR-10 recipe preset for `--epochs` × `--steps` steps and
measures, before and after pretraining:

- k-NN (k = 200, cosine, temperature 0.1) test accuracy of the encoder
  output against the training images (the SimCLRv2 run of
  `benchmarks/simclrv2_cifar10.py` measures the same);
- for PAWS, PAWS-NN test accuracy: soft nearest neighbours of the test
  projections among the 4,000 labeled projections (PAWS §5);
- for SemPPL, the pseudo-label accuracy on the unlabeled images of every
  epoch (true labels used for monitoring only).

    PYTHONPATH=. python benchmarks/cifar10_4000_labels.py --method paws \\
        --data_dir ../shared/datasets/cifar10 --epochs 4 --steps 50

Prints a markdown-ready summary with the command, the machine and times.
"""

import argparse
import dataclasses
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from keras_ssl.recipes import paws  # noqa: E402
from keras_ssl.recipes import semppl  # noqa: E402
from keras_ssl.recipes.reports import knn_accuracy  # noqa: E402
from keras_ssl.recipes.runner import load_data  # noqa: E402

RECIPES = {
    "paws": (paws, paws.PAWSConfig),
    "semppl": (semppl, semppl.SemPPLConfig),
}


def evaluate(method, model, config, splits, labeled, train_limit):
    results = {"knn": knn_accuracy(model, splits, train_limit)}
    if method == "paws":
        results["paws_nn"] = paws.paws_nn_accuracy(
            model, labeled, splits, config
        )
    return results


def machine():
    from alternate import cpu_model

    from keras_ssl.recipes.precision import instruction_flags

    return (
        f"{os.cpu_count()} cores, {cpu_model()} ({instruction_flags()}), "
        f"{platform.platform()}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=sorted(RECIPES), required=True)
    parser.add_argument("--data_dir", default="../shared/datasets/cifar10")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--images_per_class", type=int, default=None)
    parser.add_argument("--knn_train", type=int, default=50000)
    parser.add_argument("--output_dir", default=None)
    args = parser.parse_args(argv)
    started = time.time()
    module, config_cls = RECIPES[args.method]
    overrides = dict(
        data_dir=args.data_dir,
        width_multiplier=args.width,
        batch_size=args.batch,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        finetune_epochs=0,
        stages=("pretrain",),
        export=False,
        output_dir=args.output_dir or f"runs/bench_{args.method}_cifar10",
        verbose=2,
    )
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    if args.images_per_class is not None:
        overrides["images_per_class"] = args.images_per_class
    config = config_cls.cifar10(**overrides)
    splits, labeled = load_data(config)
    # The untrained model of the same seed: the "before" numbers.
    untrained = module.fit(dataclasses.replace(config, stages=()))
    before = evaluate(
        args.method,
        untrained.models["pretrainer"],
        config,
        splits,
        labeled,
        args.knn_train,
    )
    pretrain_started = time.time()
    result = module.fit(config)
    pretrain_minutes = (time.time() - pretrain_started) / 60
    model = result.models["pretrainer"]
    after = evaluate(
        args.method, model, config, splits, labeled, args.knn_train
    )
    history = result.stages["pretrain"].history
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(f"total time: {(time.time() - started) / 60:.1f} min")
    print(f"pretraining time: {pretrain_minutes:.1f} min")
    print(
        f"pretraining steps: {args.epochs * args.steps} of batch "
        f"{args.batch} ({config.labeled_per_class * 10} labels)"
    )
    for name in before:
        print(
            f"{name} test accuracy: {before[name]:.4f} random init -> "
            f"{after[name]:.4f} pretrained"
        )
    for name in sorted(history):
        values = ", ".join(f"{v:.3f}" for v in np.ravel(history[name]))
        print(f"{name} per epoch: {values}")
    return before, after, history


if __name__ == "__main__":
    main()
