"""PAWS step time vs supervised steps over the same crops (target <= 1.3).

A PAWS step (`keras_ssl.models.PAWSPretrainer.train_on_batch`) on `B`
unlabeled images and a support batch of `C x I` labeled images encodes

- the `support_views` views of each support image and the 2 global views
  of each unlabeled image in one pass at `--image-size`, and
- the `--num-small` small views of each unlabeled image in one pass at
  `--small-size`,

through one backbone and a 3-layer projection head, then computes the PAWS
loss against the support. The baseline is what the same backbone costs for
plain supervised training on the same crops: one supervised step (same
augmentation spec, backbone, linear classifier, cross-entropy, same
optimizer) on `support_views * C * I + 2 * B` images at the large size plus
one on `num_small * B` images at the small size. The script prints the
median wall and CPU time of each, the three alternating step by step
(`alternate.py`) so that a noisy shared machine slows all alike, and the
per-cycle ratios PAWS / (supervised large + supervised small).

The defaults are tiny so that it runs in about a minute on 2 CPU cores.
The paper's CIFAR-10 setting (Appendix C: batch 256, support 10 x 64 with
two views, 2 x 32 px + 6 x 18 px, 128-d head; the paper's WRN-28-2 is not
in keras_ssl, ResNet-18 stands in) is:

    KERAS_BACKEND=tensorflow python benchmarks/paws_step.py \\
        --batch-size 256 --classes 10 --per-class 64 --support-views 2 \\
        --depth 18 --jit

Run from the repository root.
"""

import argparse
import os
import platform
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from alternate import alternate  # noqa: E402
from alternate import machine  # noqa: E402
from alternate import ratios  # noqa: E402
from alternate import report  # noqa: E402
from alternate import summary  # noqa: E402

from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.layers import ProjectionHead  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.models import PAWSPretrainer  # noqa: E402
from keras_ssl.optimizers import LARS  # noqa: E402


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _backbone(args):
    return ResNet(
        depth=args.depth,
        width_multiplier=args.width,
        stem=args.stem,
        input_shape=(None, None, 3),
    )


class Supervised(keras.Model):
    """Augment with one view spec, encode, classify linearly."""

    def __init__(self, backbone, spec, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.views = Views([spec])
        self.backbone = backbone
        self.classifier = keras.layers.Dense(num_classes)

    def call(self, images, training=None):
        (view,) = self.views(images, training=training)
        return self.classifier(self.backbone(view, training=training))


def _specs(args):
    specs = Views.preset_specs("paws_cifar", size=args.image_size)
    large, small = specs[0], specs[-1]
    if args.small_size:
        small = type(small)(**{**small.to_dict(), "size": args.small_size})
    return large, small


def _paws_model(args, large, small):
    model = PAWSPretrainer(
        _backbone(args),
        num_classes=args.classes,
        head=ProjectionHead(3, args.head_dim, args.head_dim),
        views=Views([large] * 2 + [small] * args.num_small),
        support_views=args.support_views,
    )
    model.compile(optimizer=LARS(0.1), jit_compile=args.jit)
    return model


def _supervised_model(args, spec):
    model = Supervised(_backbone(args), spec, args.classes)
    model.compile(
        optimizer=LARS(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit,
    )
    return model


def _images(rng, count, size):
    return rng.integers(0, 256, (count, size, size, 3)).astype("uint8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--support-views", type=int, default=2)
    parser.add_argument("--num-small", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--small-size", type=int, default=18)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--stem", default="cifar")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="XLA-compile")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    size = args.image_size
    large, small = _specs(args)
    support = args.classes * args.per_class
    batch = {
        "unlabeled": _images(rng, args.batch_size, size),
        "support": _images(rng, support, size),
        "support_labels": np.repeat(
            np.arange(args.classes, dtype="int32"), args.per_class
        ),
    }
    large_count = args.support_views * support + 2 * args.batch_size
    small_count = args.num_small * args.batch_size
    sup_large = (
        _images(rng, large_count, size),
        rng.integers(0, args.classes, large_count),
    )
    sup_small = (
        _images(rng, small_count, size),
        rng.integers(0, args.classes, small_count),
    )

    paws = _paws_model(args, large, small)
    supervised_large = _supervised_model(args, large)
    supervised_small = _supervised_model(args, small)
    steps = {
        "paws": lambda: paws.train_on_batch(batch),
        "supervised_large": lambda: supervised_large.train_on_batch(*sup_large),
        "supervised_small": lambda: supervised_small.train_on_batch(*sup_small),
    }
    # train_on_batch returns NumPy values: each step has finished.
    results = alternate(steps, cycles=args.steps, warmup=args.warmup)
    median = {name: statistics.median(r["wall"]) for name, r in results.items()}
    baseline = median["supervised_large"] + median["supervised_small"]
    parts = ("supervised_large", "supervised_small")
    ratio = statistics.median(ratios(results, "paws", parts))
    print(machine())
    print(
        f"backbone: ResNet-{args.depth} {args.width}x ({args.stem} stem); "
        f"batch {args.batch_size}, support {args.classes} x "
        f"{args.per_class} x {args.support_views} views, "
        f"2 x {size} px + {args.num_small} x {small.size} px, "
        f"jit={args.jit}, {args.steps} alternating cycles"
    )
    print(report(results, baseline="paws"))
    for name, value in median.items():
        print(f"{name:>17}: {value * 1000:9.1f} ms")
    print(
        "PAWS / (supervised large + small), per cycle: "
        + summary(results, "paws", parts)
    )
    print(
        "| `" + " ".join(sys.argv[1:]) + "` | "
        f"{_cpu_model()} | {median['paws'] * 1000:.0f} ms | "
        f"{baseline * 1000:.0f} ms | {ratio:.2f} |"
    )


if __name__ == "__main__":
    main()
