"""SimCLR on CIFAR-10 on one GPU: keras-ssl (Keras 3 on JAX) vs lightly.

Both runs train the same experiment in one process on the same device: a
CIFAR ResNet-18 (3×3 stem, no max-pool) with a 2-layer projection head
(512 → 512 → 128), NT-Xent at temperature 0.5 with in-batch negatives,
batch 512, SGD (momentum 0.9, weight decay 5e-4, learning rate
0.06 × batch / 256 with cosine decay), SimCLR's CIFAR augmentations
(random resized crop with scale (0.08, 1), horizontal flip, colour jitter
of strength 0.5 with probability 0.8, grey with probability 0.2, no blur).
keras-ssl makes the views on the GPU inside the jitted step; lightly makes
them per image with torchvision in `DataLoader` worker processes, as its
own CIFAR-10 benchmarks do. After each epoch both encoders are evaluated by
the same weighted k-NN classifier (k = 200, cosine, temperature 0.1,
`keras_ssl.evaluation.KNNClassifier`) on the training images they saw as
the memory bank and the test images as queries.

Each epoch prints its wall time, images/s and k-NN test accuracy; the end
prints the throughput ratio (mean over the epochs after the first, which
holds compilation) and both accuracies.

GPU machine (JAX with CUDA and PyTorch, no TensorFlow; see
docs/benchmarks.md for the wheels to bring):

    KERAS_BACKEND=jax python benchmarks/gpu_cifar10.py \\
        --data .bench/cifar10.npz --epochs 5

`--pack_from ../shared/datasets/cifar10 --data .bench/cifar10.npz` first
writes a shuffled subset of the arrays (`--train_images`, `--test_images`)
into one compressed file to take along. `--tiny` runs a few steps on
random images at a tiny width (CI, CPU).
"""

import argparse
import math
import os
import platform
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

TEMPERATURE = 0.5
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
BASE_LEARNING_RATE = 0.06  # per 256 images
PROJECTION = (512, 128)  # hidden, output
CROP_SCALE = (0.08, 1.0)
COLOR_STRENGTH = 0.5
KNN_K = 200
KNN_TEMPERATURE = 0.1


def pack(source_dir, path, train_images, test_images, seed=0):
    """A shuffled subset of CIFAR-10 in one compressed `.npz`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train_images), ("test", test_images)):
        with np.load(os.path.join(source_dir, f"{split}.npz")) as data:
            x, y = data["x"], data["y"]
        order = rng.permutation(len(x))[:count]
        arrays[f"x_{split}"] = x[order]
        arrays[f"y_{split}"] = y[order].astype("int32")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def load(args):
    if args.tiny:
        rng = np.random.default_rng(0)
        return {
            "x_train": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
            "y_train": (np.arange(64) % 10).astype("int32"),
            "x_test": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
            "y_test": (np.arange(32) % 10).astype("int32"),
        }
    if args.pack_from:
        return pack(
            args.pack_from, args.data, args.train_images, args.test_images
        )
    if not os.path.exists(args.data):
        raise ValueError(
            f"`--data` must name an .npz written by --pack_from. "
            f"Received: data={args.data!r}"
        )
    with np.load(args.data) as data:
        return {k: data[k] for k in data.files}


def knn_accuracy(train_features, train_labels, test_features, test_labels):
    from keras_ssl.evaluation import KNNClassifier

    k = min(KNN_K, len(train_features))
    knn = KNNClassifier(k=k, temperature=KNN_TEMPERATURE, num_classes=10)
    knn.fit(np.asarray(train_features), train_labels)
    return float(knn.evaluate(np.asarray(test_features), test_labels))


def learning_rate(batch_size):
    return BASE_LEARNING_RATE * batch_size / 256


class Report:
    """Per-epoch lines, and the summary over the epochs after the first."""

    def __init__(self, name, num_images, args):
        self.name = name
        self.num_images = num_images
        self.num_epochs = args.epochs
        self.max_seconds = args.max_minutes * 60
        self.rates = []
        self.accuracies = []

    def epochs(self):
        """Epoch indices, stopping early once `--max_minutes` are spent."""
        started = time.perf_counter()
        for epoch in range(self.num_epochs):
            if epoch and time.perf_counter() - started > self.max_seconds:
                print(f"[{self.name}] time budget spent after {epoch} epochs")
                return
            yield epoch

    def epoch(self, index, seconds, accuracy, loss):
        rate = self.num_images / seconds
        self.rates.append(rate)
        self.accuracies.append(accuracy)
        print(
            f"[{self.name}] epoch {index + 1}: {seconds:.1f} s, "
            f"{rate:.0f} images/s, loss {loss:.4f}, "
            f"k-NN test accuracy {accuracy:.4f}",
            flush=True,
        )

    @property
    def steady_rate(self):
        rates = self.rates[1:] or self.rates
        return float(np.mean(rates))


def run_keras(data, args):
    import keras

    from keras_ssl.backbones import ResNet
    from keras_ssl.data import semi_supervised
    from keras_ssl.evaluation import embed
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.layers import Views
    from keras_ssl.layers import ViewSpec
    from keras_ssl.models import SimCLRv2Pretrainer

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = data["x_train"], data["y_train"]
    steps = len(x_train) // args.batch_size
    encoder = ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(32, 32, 3),
    )
    spec = ViewSpec(
        size=32,
        scale=CROP_SCALE,
        color_strength=COLOR_STRENGTH,
        blur_p=0.0,
        solarize_p=0.0,
    )
    model = SimCLRv2Pretrainer(
        encoder,
        head=ProjectionHead(
            num_layers=2, hidden_dim=PROJECTION[0], output_dim=PROJECTION[1]
        ),
        views=Views([spec, spec], seed=args.seed),
        temperature=TEMPERATURE,
        memory_size=0,
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate(args.batch_size), decay_steps=steps * args.epochs
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
    )
    stream = semi_supervised(
        x_train,
        unlabeled_batch_size=args.batch_size,
        seed=args.seed,
    )
    report = Report("keras-ssl (JAX)", steps * args.batch_size, args)
    x_train_float = x_train.astype("float32") / 255.0
    x_test_float = data["x_test"].astype("float32") / 255.0
    for epoch in report.epochs():
        started = time.perf_counter()
        history = model.fit(
            stream, initial_epoch=epoch, epochs=epoch + 1, verbose=0
        )
        seconds = time.perf_counter() - started
        accuracy = knn_accuracy(
            embed(encoder, x_train_float, batch_size=1024),
            y_train,
            embed(encoder, x_test_float, batch_size=1024),
            data["y_test"],
        )
        report.epoch(epoch, seconds, accuracy, history.history["loss"][-1])
    return report


def run_lightly(data, args):
    import torch
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x_train, y_train = data["x_train"], data["y_train"]
    steps = len(x_train) // args.batch_size
    transform = SimCLRTransform(
        input_size=32,
        cj_prob=0.8,
        cj_strength=COLOR_STRENGTH,
        min_scale=CROP_SCALE[0],
        random_gray_scale=0.2,
        gaussian_blur=0.0,
        normalize=None,
    )

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(x_train)

        def __getitem__(self, index):
            return transform(Image.fromarray(x_train[index]))

    loader = torch.utils.data.DataLoader(
        Images(),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device == "cuda",
    )
    resnet = torchvision.models.resnet18()
    resnet.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    resnet.maxpool = torch.nn.Identity()
    resnet.fc = torch.nn.Identity()
    if args.width != 1:
        raise ValueError(
            "The lightly run uses torchvision's ResNet-18 at width 1. "
            f"Received: width={args.width}"
        )
    head = SimCLRProjectionHead(512, PROJECTION[0], PROJECTION[1])
    model = torch.nn.Sequential(resnet, head).to(device)
    criterion = NTXentLoss(temperature=TEMPERATURE)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=learning_rate(args.batch_size),
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, steps * args.epochs
    )

    @torch.no_grad()
    def features(images):
        resnet.eval()
        out = []
        for start in range(0, len(images), 1024):
            batch = torch.from_numpy(images[start : start + 1024]).to(device)
            batch = batch.permute(0, 3, 1, 2).float() / 255.0
            out.append(
                torch.nn.functional.normalize(resnet(batch), dim=1).cpu()
            )
        resnet.train()
        return torch.cat(out).numpy()

    report = Report("lightly (PyTorch)", steps * args.batch_size, args)
    for epoch in report.epochs():
        started = time.perf_counter()
        model.train()
        total = 0.0
        for views in loader:
            x0, x1 = (v.to(device, non_blocking=True) for v in views)
            loss = criterion(model(x0), model(x1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        accuracy = knn_accuracy(
            features(x_train), y_train, features(data["x_test"]), data["y_test"]
        )
        report.epoch(epoch, seconds, accuracy, total / steps)
    return report


def machine():
    lines = [f"{os.cpu_count()} CPU cores, {platform.platform()}"]
    try:
        import jax

        lines.append(f"JAX {jax.__version__}: {jax.devices()}")
    except ImportError:
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
        lines.append(f"PyTorch {torch.__version__} {gpu}".strip())
    except ImportError:
        pass
    return "; ".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=".bench/cifar10.npz")
    parser.add_argument("--pack_from", default=None)
    parser.add_argument("--train_images", type=int, default=50000)
    parser.add_argument("--test_images", type=int, default=10000)
    parser.add_argument("--pack_only", action="store_true")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count()))
    parser.add_argument("--frameworks", default="keras,lightly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_minutes",
        type=float,
        default=math.inf,
        help="stop a framework's run after the epoch that passes this",
    )
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = sorted(set(frameworks) - {"keras", "lightly"})
    if unknown:
        raise ValueError(
            "`--frameworks` takes keras and lightly. "
            f"Received: frameworks={args.frameworks!r}"
        )
    if args.tiny:
        args.epochs, args.batch_size = min(args.epochs, 2), 16
        args.workers = 0
        if "lightly" not in frameworks:
            args.width = 0.125
    data = load(args)
    if args.pack_only:
        print(f"wrote {args.data}: {len(data['x_train'])} training images")
        return {}
    if len(data["x_train"]) < args.batch_size:
        raise ValueError(
            "The training set must hold at least one batch. Received: "
            f"{len(data['x_train'])} images, batch_size={args.batch_size}"
        )
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(
        f"data: {len(data['x_train'])} training, {len(data['x_test'])} test "
        f"images; batch {args.batch_size}; {args.epochs} epochs"
    )
    runs = {"keras": run_keras, "lightly": run_lightly}
    reports = {}
    for name in frameworks:
        try:
            reports[name] = runs[name](data, args)
        except Exception:
            # One framework failing (say, lightly not installed) must not
            # lose the other's numbers; the exit status still says so.
            traceback.print_exc()
    if len(reports) < len(frameworks):
        failed = sorted(set(frameworks) - set(reports))
        print(f"failed: {', '.join(failed)}")
    for report in reports.values():
        print(
            f"{report.name}: {report.steady_rate:.0f} images/s after the "
            f"first epoch; final k-NN accuracy {report.accuracies[-1]:.4f}"
        )
    if len(reports) == 2:
        ratio = reports["keras"].steady_rate / reports["lightly"].steady_rate
        print(f"throughput ratio keras-ssl / lightly: {ratio:.2f}")
    if len(reports) < len(frameworks):
        sys.exit(1)
    return reports


if __name__ == "__main__":
    main()
