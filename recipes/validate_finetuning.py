"""Fine-tuning settings scored on a validation split, never the test set.

Loads a finished pretraining of a small-preset run and fine-tunes it
(LP-FT) with each setting given, scoring each on training images outside
the labeled subset (their labels are used for scoring only): the head
fitted to the frozen features, then every WiSE-FT share of the fine-tuned
weights, and how far fine-tuning moved each kind of weight:

    python recipes/validate_finetuning.py simclrv2 runs/simclrv2_digits \
        0.05,1,0.3 0.01,0,0.8
    python recipes/validate_finetuning.py paws runs/paws_cifar10_cpu \
        --preset cifar10_cpu --data_dir ../shared/datasets/cifar10 \
        --batch 250 --steps 30 --validation 5000 0.005,0,0.8 0.001,0,0.8

Each setting is `rate,ft_layer,min_crop_area` (rate scaled by √B, as the
recipes do), optionally `,rank1` to let LARS adapt BatchNorm's scale and
offset and the biases too (the recipes leave them out, as SimCLR does).
docs/benchmarks.md has what it printed.
"""

import argparse

import numpy as np

from keras_ssl import data as ssl_data
from keras_ssl.models import fine_tuning
from keras_ssl.recipes import paws
from keras_ssl.recipes import reports
from keras_ssl.recipes import runner
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes import stages
from keras_ssl.recipes.datasets import ArraySplits

RECIPES = {
    "simclrv2": (simclrv2, simclrv2.SimCLRv2Config),
    "paws": (paws, paws.PAWSConfig),
    "semppl": (semppl, semppl.SemPPLConfig),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("output_dir")
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        help="held-out images to score on (0: all outside the labels)",
    )
    args = parser.parse_args(argv)
    module, config_cls = RECIPES[args.recipe]
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    preset = getattr(config_cls, args.preset)
    config = preset(**overrides)
    splits, labeled = runner.load_data(config)
    result = reports.RecipeResult(config=config)
    run = runner.Run(config, splits, labeled, False, result)
    pretrainer = module.STAGES[0].build(run)
    pretrainer.load_weights(f"{args.output_dir}/pretrain/final.weights.h5")
    run.models["pretrainer"] = pretrainer
    held_out = np.ones(len(splits.x_train), bool)
    held_out[labeled.indices] = False
    where = np.flatnonzero(held_out)
    if args.validation:
        rng = np.random.default_rng(123)
        where = np.sort(rng.choice(where, args.validation, replace=False))
    x_val, y_val = splits.x_train[where], splits.y_train[where]
    validation = ArraySplits(
        splits.x_train, splits.y_train, x_val, y_val, splits.num_classes
    )
    probes = reports.probe_accuracies(pretrainer, labeled, validation)
    print(f"validation ({len(y_val)} images), encoder features:", probes)
    weights = pretrainer.get_weights()
    batch = min(args.batch, len(labeled.y))
    for setting in args.settings:
        rate, ft_layer, crop, *extra = setting.split(",")
        pretrainer.set_weights(weights)
        run.config = preset(finetune_crop_scale=(float(crop), 1), **overrides)
        head = getattr(pretrainer, "head", None)
        model = stages.fine_tuner(run, head, int(ft_layer))
        model.compile(
            optimizer=stages.lars(
                float(rate),
                batch,
                "sqrt",
                args.steps,
                exclude_rank_1="rank1" not in extra,
            )
        )
        model.fit_linear_head(labeled.x, labeled.y)
        start = model.get_weights()
        stream = ssl_data.from_arrays(
            labeled.x, labeled.y, batch_size=batch, seed=0, repeat=True
        )
        history = model.fit(
            stream.to_tf_dataset(), steps_per_epoch=args.steps, verbose=0
        )
        end = model.get_weights()
        shares = []
        for share in fine_tuning.SHARES:
            fine_tuning.assign_interpolated(model, start, end, share)
            shares.append(f"{share:g}: {_accuracy(model, x_val, y_val):.4f}")
        print(
            f"{setting}: validation by share of the fine-tuned weights "
            f"(0 = head fitted) {', '.join(shares)}; training accuracy "
            f"{history.history['accuracy'][-1]:.3f}; relative change "
            f"{_moved(model, start, end)}"
        )


def _moved(model, start, end):
    """‖Δw‖ / ‖w‖ of the trainable weights by kind."""
    sums = {}
    for variable, first, last in zip(model.weights, start, end):
        if not variable.trainable:
            continue
        kind = {4: "conv", 2: "dense"}.get(first.ndim, variable.name)
        change, size = sums.get(kind, (0.0, 0.0))
        change += float(np.sum((last - first) ** 2))
        sums[kind] = (change, size + float(np.sum(first**2)))
    return ", ".join(
        f"{kind} {np.sqrt(change / max(size, 1e-30)):.4f}"
        for kind, (change, size) in sorted(sums.items())
    )


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


if __name__ == "__main__":
    main()
