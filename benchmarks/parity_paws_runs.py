"""Short PAWS runs side by side: suncet's training step and keras-ssl's.

Does PAWS with ME-MAX stay collapsed in a few hundred steps at the small
presets' learning rate, in the reference's own code as in ours? Each run
trains one side on the same CIFAR-10 images (`--images` training images,
`--labeled-per-class` of them labeled, from the NumPy arrays of
`--data`), each side with its own augmentations, for `--steps` steps
with the same settings, and reports the loss every `--log-every` steps
(averaged over those steps), the entropy of the mean sharpened
prediction `H(p_bar)` (the ME-MAX term, also computed when it is off) and
the k-NN accuracy of the encoder's features at the end (`--knn-k`
neighbours by cosine, votes weighted by `exp(cos / 0.1)`; the training
images are the bank, `--test-images` test images the queries).

The reference side (`--reference-python`, a PyTorch environment) imports
suncet from `--suncet-dir` (see benchmarks/parity_paws.py): its
`src/resnet.py` ResNet-18 (`ResNet(BasicBlock, [2, 2, 2, 2])`, the
ImageNet stem), the projection head `paws_train.init_model` builds
(three `Linear` layers of the features' width, 128 outputs, no prediction
head: the CIFAR-10 config's `use_pred_head: false`), `paws_train.init_opt`
(LARS around its SGD, `WarmupCosineSchedule`), `init_paws_loss`,
`make_labels_matrix`, its CIFAR-10 transforms (`make_transforms`,
`make_multicrop_transform`: crops of scale (0.75, 1) and (0.3, 0.75) at
32 and 18 px, colour distortion 0.5, solarize, equalize, normalisation)
and `paws_train.py`'s step (benchmarks/parity_paws.py's
`reference_step`). Support batches are drawn as its
`ClassStratifiedSampler` draws them: `--classes` classes, then
`--images-per-class` images each, ordered image `i` of class
`i mod classes`, two views each.

Our side is `PAWSPretrainer` as `keras_ssl.recipes.paws` builds it for
`PAWSConfig.cifar10_cpu()`: its views (`paws_cifar`, the first
`--multicrop` small crops), the 3-layer biased projection head, two views
of each support image, `SupportSampler`, `semi_supervised`, and the
recipe's LARS (`stages.lars`) on `ResNet(depth=18, stem="imagenet",
pool_padding="symmetric")`, the same network as the reference's but for
the 1x1 projection shortcut ours has in the first block.

Settings common to both: batch `--batch`, `--multicrop` small crops,
LARS with momentum 0.9, eeta 0.001, weight decay 1e-6, peak rate
`--peak-lr` (4.0: the small presets' 8.0 x 128 / 256 at their batch of
128; kept at the smaller batch here), warm-up over
1/60 of the steps (the presets' `warmup_fraction`) from 0, cosine decay
to 1% of the peak, tau 0.1, T 0.25, label smoothing 0.1.

Each run writes `--out/{side}_{memax|nomemax}_{seed}.json`; runs already
there are skipped; the table is printed from every file there. Run it as

    KERAS_BACKEND=tensorflow python benchmarks/parity_paws_runs.py \\
        --suncet-dir /path/to/suncet --reference-python /path/to/python \\
        --data /path/to/cifar10 --out runs/paws_me_max
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import parity_paws  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suncet-dir")
    parser.add_argument("--reference-python", default=sys.executable)
    parser.add_argument("--data", help="folder of train.npz and test.npz")
    parser.add_argument("--out", default="runs/paws_me_max")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--labeled-per-class", type=int, default=25)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--multicrop", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--images-per-class", type=int, default=1)
    parser.add_argument("--peak-lr", type=float, default=4.0)
    parser.add_argument("--knn-k", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sides", default="reference,ours")
    parser.add_argument("--me-max", default="on,off")
    parser.add_argument("--report", action="store_true", help="only print")
    parser.add_argument("--worker", choices=("reference", "ours"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-me-max", type=int, default=1)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.sides = args.sides.split(",")
    args.me_max = args.me_max.split(",")
    bad = [s for s in args.sides if s not in ("reference", "ours")]
    bad += [m for m in args.me_max if m not in ("on", "off")]
    if bad or args.steps < args.log_every or args.batch < 2:
        raise ValueError(
            f"Bad arguments: sides={args.sides}, me_max={args.me_max}, "
            f"steps={args.steps}, log_every={args.log_every}, "
            f"batch={args.batch} (sides reference/ours, me_max on/off, "
            "steps >= log_every, batch >= 2)"
        )
    if not args.report and not args.worker:
        if "reference" in args.sides:
            args.suncet_root = parity_paws.check_suncet_dir(args.suncet_dir)
        if not args.data or not os.path.isfile(
            os.path.join(args.data, "train.npz")
        ):
            raise ValueError(
                "`--data` must name a folder holding CIFAR-10's train.npz "
                f"and test.npz. Received: data={args.data!r}"
            )
    return args


def peak_rate(args):
    # The small presets' peak: 8.0 x 128 / 256 at their batch of 128.
    return args.peak_lr


def warmup_steps(args):
    # The presets' warm-up: 10 of 600 epochs.
    return int(round(args.steps * 10 / 600))


def load_data(args):
    """`(x, y)` training images (the first `--images` of a seeded
    shuffle), the labeled subset's indices, and `(x, y)` test images."""
    import numpy as np

    train = np.load(os.path.join(args.data, "train.npz"))
    test = np.load(os.path.join(args.data, "test.npz"))
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(train["y"]))[: args.images]
    x, y = train["x"][order], train["y"][order].astype("int64")
    labeled = np.concatenate(
        [np.flatnonzero(y == c)[: args.labeled_per_class] for c in range(10)]
    )
    test_order = rng.permutation(len(test["y"]))[: args.test_images]
    return (
        (x, y),
        labeled,
        (test["x"][test_order], test["y"][test_order].astype("int64")),
    )


def knn_accuracy(bank, bank_labels, queries, labels, k, temperature=0.1):
    """Weighted k-NN by cosine (votes `exp(cos / temperature)`)."""
    import numpy as np

    def unit(x):
        x = np.asarray(x, "float64")
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(queries) @ unit(bank).T
    top = np.argsort(-similarity, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, top, 1) / temperature)
    votes = np.zeros((len(queries), int(bank_labels.max()) + 1))
    for column in range(k):
        np.add.at(
            votes,
            (np.arange(len(queries)), bank_labels[top[:, column]]),
            weights[:, column],
        )
    return float(np.mean(votes.argmax(1) == labels))


def mean_cosine(features):
    """Mean pairwise cosine of the rows (collapse shows as 1)."""
    import numpy as np

    x = np.asarray(features, "float64")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    total = np.sum(x.sum(0) ** 2)
    return float((total - n) / (n * (n - 1)))


# === Reference run (PyTorch) ===


def reference_run(args):
    import logging
    import types

    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, args.suncet_dir)
    sys.modules.setdefault("apex", types.ModuleType("apex"))
    import src.paws_train as paws_train
    import src.resnet as resnet
    from src.data_manager import make_multicrop_transform
    from src.data_manager import make_transforms
    from src.losses import init_paws_loss
    from src.losses import make_labels_matrix

    logging.getLogger().setLevel(logging.WARNING)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    (x, y), labeled, (x_test, y_test) = load_data(args)
    encoder = resnet.ResNet(resnet.BasicBlock, [2, 2, 2, 2])
    width = encoder.layer4[-1].bn2.num_features
    # paws_train.init_model's projection head at the features' width.
    from collections import OrderedDict

    encoder.fc = torch.nn.Sequential(
        OrderedDict(
            [
                ("fc1", torch.nn.Linear(width, width)),
                ("bn1", torch.nn.BatchNorm1d(width)),
                ("relu1", torch.nn.ReLU(inplace=True)),
                ("fc2", torch.nn.Linear(width, width)),
                ("bn2", torch.nn.BatchNorm1d(width)),
                ("relu2", torch.nn.ReLU(inplace=True)),
                ("fc3", torch.nn.Linear(width, 128)),
            ]
        )
    )
    encoder.pred = None
    peak = peak_rate(args)
    encoder, optimizer, scheduler = paws_train.init_opt(
        encoder=encoder,
        iterations_per_epoch=1,
        start_lr=0.0,
        ref_lr=peak,
        ref_mom=0.9,
        nesterov=False,
        warmup=warmup_steps(args),
        num_epochs=args.steps,
        weight_decay=1e-6,
        final_lr=0.01 * peak,
    )
    paws = init_paws_loss(
        multicrop=args.multicrop, tau=0.1, T=0.25, me_max=bool(args.with_me_max)
    )
    with_me_max = init_paws_loss(
        multicrop=args.multicrop, tau=0.1, T=0.25, me_max=True
    )
    labels_matrix = make_labels_matrix(
        num_classes=args.classes,
        s_batch_size=args.images_per_class,
        world_size=1,
        device=torch.device("cpu"),
        smoothing=0.1,
    )
    transform, _ = make_transforms(
        dataset_name="cifar10",
        training=True,
        crop_scale=(0.75, 1.0) if args.multicrop > 0 else (0.5, 1.0),
        color_jitter=0.5,
        normalize=True,
    )
    small = None
    if args.multicrop:
        _, small = make_multicrop_transform(
            "cifar10", args.multicrop, 18, (0.3, 0.75), True, 0.5
        )
    pil = [Image.fromarray(image) for image in x]
    by_class = [labeled[y[labeled] == c] for c in range(10)]
    order, cursor = rng.permutation(len(x)), 0
    logs, block = [], []
    for step in range(args.steps):
        if cursor + args.batch > len(order):
            order, cursor = rng.permutation(len(x)), 0
        batch = order[cursor : cursor + args.batch]
        cursor += args.batch
        classes = rng.permutation(10)[: args.classes]
        picks = np.stack(
            [
                rng.choice(by_class[c], args.images_per_class, replace=False)
                for c in classes
            ],
            axis=1,
        ).reshape(-1)  # image i is of class classes[i mod C]
        simgs = [
            torch.stack([transform(pil[i]) for i in picks]) for _ in range(2)
        ]
        uimgs = [
            torch.stack([transform(pil[i]) for i in batch]) for _ in range(2)
        ]
        uimgs += [
            torch.stack([small(pil[i]) for i in batch])
            for _ in range(args.multicrop)
        ]
        result = parity_paws.reference_step(
            encoder,
            optimizer,
            scheduler,
            paws,
            simgs,
            uimgs,
            torch.cat([labels_matrix, labels_matrix]),
            args.batch,
            with_me_max,
        )
        block.append(result)
        if len(block) == args.log_every:
            logs.append(_average(block, step + 1))
            print(json.dumps(logs[-1]), file=sys.stderr, flush=True)
            block = []
    encoder.eval()
    fc, encoder.fc = encoder.fc, None
    mean = torch.tensor(CIFAR_MEAN)[:, None, None]
    std = torch.tensor((0.2023, 0.1994, 0.2010))[:, None, None]

    def features(images):
        out = []
        with torch.no_grad():
            for start in range(0, len(images), 500):
                chunk = torch.from_numpy(images[start : start + 500])
                chunk = chunk.permute(0, 3, 1, 2).float() / 255.0
                out.append(encoder((chunk - mean) / std).numpy())
        return np.concatenate(out)

    bank, queries = features(x), features(x_test)
    encoder.fc = fc
    return logs, bank, queries


def _average(block, step):
    means = {k: statistics.fmean(b[k] for b in block) for k in block[0]}
    return {"step": step, **means}


# === Our run (Keras) ===


def ours_run(args):
    import keras
    import numpy as np

    from keras_ssl import data as ssl_data
    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.layers import Views
    from keras_ssl.models import PAWSPretrainer
    from keras_ssl.recipes import stages

    keras.utils.set_random_seed(args.seed)
    (x, y), labeled, (x_test, y_test) = load_data(args)
    encoder = ResNet(depth=18, stem="imagenet", pool_padding="symmetric")
    specs = Views.preset_specs("paws_cifar", size=32)[: 2 + args.multicrop]
    model = PAWSPretrainer(
        encoder,
        num_classes=10,
        head=ProjectionHead(
            num_layers=3,
            output_dim=128,
            use_bias=True,
            batch_norm=[True, True, False],
        ),
        views=Views(specs, seed=args.seed),
        support_views=2,
        me_max=bool(args.with_me_max),
    )
    model.compile(
        optimizer=stages.lars(
            peak_rate(args) * 256 / args.batch,
            args.batch,
            "linear",
            args.steps,
            warmup_steps=warmup_steps(args),
            weight_decay=1e-6,
            end_fraction=0.01,
        )
    )
    stream = ssl_data.semi_supervised(
        x,
        unlabeled_batch_size=args.batch,
        support=ssl_data.SupportSampler(
            x[labeled],
            y[labeled],
            classes_per_batch=args.classes,
            images_per_class=args.images_per_class,
            num_classes=10,
            seed=args.seed,
        ),
        seed=args.seed,
        repeat=True,
    )
    history = model.fit(
        stream,
        steps_per_epoch=args.log_every,
        epochs=args.steps // args.log_every,
        verbose=0,
    ).history
    logs = []
    for i in range(len(history["loss"])):
        entropy = history["me_max"][i]
        logs.append(
            {
                "step": (i + 1) * args.log_every,
                "loss": history["loss"][i],
                "cross_entropy": history["cross_entropy"][i],
                "entropy": entropy,
            }
        )
    bank = encoder.predict(
        x.astype("float32") / 255.0, batch_size=500, verbose=0
    )
    queries = encoder.predict(
        x_test.astype("float32") / 255.0, batch_size=500, verbose=0
    )
    return logs, np.asarray(bank), np.asarray(queries)


def worker(args):
    start = time.perf_counter()
    run = reference_run if args.worker == "reference" else ours_run
    logs, bank, queries = run(args)
    (x, y), _, (_, y_test) = load_data(args)
    result = {
        "side": args.worker,
        "me_max": bool(args.with_me_max),
        "seed": args.seed,
        "logs": logs,
        "knn": knn_accuracy(bank, y, queries, y_test, args.knn_k),
        "mean_cosine": mean_cosine(queries),
        "seconds": time.perf_counter() - start,
    }
    print("RESULT " + json.dumps(result))


# === Parent ===


def run_one(args, side, me_max, seed, path):
    python = args.reference_python if side == "reference" else sys.executable
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    command = [
        python,
        os.path.abspath(__file__),
        "--worker",
        side,
        "--seed",
        str(seed),
        "--with-me-max",
        str(int(me_max)),
        "--data",
        os.path.abspath(args.data),
    ]
    if side == "reference":
        command += ["--suncet-dir", args.suncet_root]
    for name in (
        "images",
        "test_images",
        "labeled_per_class",
        "steps",
        "log_every",
        "batch",
        "multicrop",
        "classes",
        "images_per_class",
        "peak_lr",
        "knn_k",
    ):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    output = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, env=env, check=True
    ).stdout
    line = [s for s in output.splitlines() if s.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    with open(path, "w") as f:
        json.dump(result, f)
    return result


def _spread(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def report(out):
    results = []
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    groups = {}
    for r in results:
        groups.setdefault((r["side"], r["me_max"]), []).append(r)
    lines = []
    for (side, me_max), runs in sorted(groups.items()):
        name = f"{side}, ME-MAX {'on' if me_max else 'off'} ({len(runs)} seeds)"
        lines.append(f"\n{name}")
        lines.append("| step | loss | cross-entropy | H(p_bar) |")
        lines.append("| ---: | ---: | ---: | ---: |")
        for i, log in enumerate(runs[0]["logs"]):
            cells = [
                _spread([r["logs"][i][key] for r in runs])
                for key in ("loss", "cross_entropy", "entropy")
            ]
            lines.append(f"| {log['step']} | " + " | ".join(cells) + " |")
        lines.append(
            f"k-NN {_spread([r['knn'] for r in runs])}, mean test cosine "
            f"{_spread([r['mean_cosine'] for r in runs])}, "
            f"{statistics.fmean(r['seconds'] for r in runs):.0f} s per run"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.report:
        os.makedirs(args.out, exist_ok=True)
        if "reference" in args.sides:
            parity_paws.check_reference_python(args.reference_python)
        for seed in args.seeds:
            for me_max in args.me_max:
                for side in args.sides:
                    tag = "memax" if me_max == "on" else "nomemax"
                    path = os.path.join(args.out, f"{side}_{tag}_{seed}.json")
                    if not os.path.exists(path):
                        run_one(args, side, me_max == "on", seed, path)
    print(report(args.out))


if __name__ == "__main__":
    main()
