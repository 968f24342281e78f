"""SimCLRv2 step cost on CPU, contenders timed in alternation.

Contenders (`--contenders`, comma-separated, each a `fit()` training step
through `train_on_batch` on the same batch, or a forward pass):

- `supervised`: a supervised step on the same 2·B crops (float32 images
  fed from the host) with the same backbone and LARS: the floor for two
  views.
- `pretrain`: SimCLRv2 pretraining (two views made on the device, NT-Xent),
  memory off.
- `memory`: with a `--memory`-entry MoCo memory keying both views;
  `memory_one_view`: keying the first view only (`memory_views=1`).
- `key_forward`: the memory network's forward pass over the keyed views
  alone (batch statistics, no gradient). `pretrain + key_forward` is the
  memory's operation-count floor: the memory cannot cost less than one
  extra forward pass of the keyed views.
- `pretrain_keras_bn`: `pretrain` with Keras's unfused BatchNormalization
  in place of `FusedBatchNormalization`.
- `pretrain_uncompiled_views`: `pretrain` with the views run as plain ops
  in the step instead of their own compiled function.

`--precision bfloat16` (or `float16`) builds every contender under Keras's
`mixed_bfloat16` (`mixed_float16`) policy; `--contenders` may also name
`pretrain@bfloat16`, `supervised@bfloat16` to compare precisions in one
run.

    PYTHONPATH=. python benchmarks/simclrv2_step.py --batch 256 --width 1

Prints a markdown table (medians and ranges over cycles, per-cycle
ratios of wall and CPU time) with the command and the machine.
`--profile` also traces 2 steps of each contender after the timed cycles
and prints its self time by op type (`benchmarks/op_profile.py`).
"""

import argparse
import contextlib
import os
import sys
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from alternate import alternate  # noqa: E402
from alternate import machine  # noqa: E402
from alternate import report  # noqa: E402
from alternate import summary  # noqa: E402
from op_profile import op_table  # noqa: E402
from op_profile import op_times  # noqa: E402

import keras_ssl  # noqa: E402
from keras_ssl import distribute  # noqa: E402
from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.models import SimCLRv2Pretrainer  # noqa: E402
from keras_ssl.models import simclrv2_pretrainer  # noqa: E402

POLICIES = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}
# What each contender's ratio is taken against.
VERSUS = {
    "pretrain": "supervised",
    "memory": "pretrain",
    "memory_one_view": "pretrain",
    "key_forward": "pretrain",
    "pretrain_keras_bn": "pretrain",
    "pretrain_uncompiled_views": "pretrain",
}


@contextlib.contextmanager
def dtype_policy(precision):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keras_batch_norm(synchronized=False, **kwargs):
    return keras.layers.BatchNormalization(**kwargs)


def uncompiled(layer, images, training=True):
    return layer(images, training=training)


def _encoder(args):
    return ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(args.size, args.size, 3),
    )


def _pretrainer(args, memory_size=0, memory_views=2):
    model = SimCLRv2Pretrainer(
        _encoder(args),
        views=Views.from_preset("simclr_cifar", size=args.size),
        memory_size=memory_size,
        memory_views=memory_views,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
    return model


def _train_step(model, data):
    return lambda: model.train_on_batch(*data)


def build(name, args, images):
    """The step of contender `name` (see the module docstring)."""
    uint8 = (tf.constant(images),)
    if name == "supervised":
        model = keras.Sequential([_encoder(args), keras.layers.Dense(10)])
        model.compile(
            optimizer=keras_ssl.optimizers.LARS(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x = np.concatenate([images, images]).astype("float32") / 255.0
        return _train_step(model, (tf.constant(x), tf.zeros(len(x), "int32")))
    if name == "pretrain":
        return _train_step(_pretrainer(args), uint8)
    if name == "memory":
        return _train_step(_pretrainer(args, args.memory), uint8)
    if name == "memory_one_view":
        return _train_step(_pretrainer(args, args.memory, 1), uint8)
    if name == "key_forward":
        model = _pretrainer(args, args.memory)
        views = tf.random.uniform((2 * len(images), args.size, args.size, 3))

        @tf.function
        def forward(x):
            h = model.momentum_encoder(x, training=True)
            return model.momentum_head(h, training=True)[-1]

        return lambda: forward(views).numpy()
    if name == "pretrain_keras_bn":
        with mock.patch.object(
            distribute, "batch_normalization", keras_batch_norm
        ):
            model = _pretrainer(args)
        return _train_step(model, uint8)
    if name == "pretrain_uncompiled_views":
        model = _pretrainer(args)
        step = _train_step(model, uint8)

        def run():
            with mock.patch.object(
                simclrv2_pretrainer, "compiled_call", uncompiled
            ):
                return step()

        return run
    raise ValueError(f"Unknown contender: {name!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--memory", type=int, default=65536)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--precision", default="float32", choices=POLICIES)
    parser.add_argument(
        "--contenders",
        default="supervised,pretrain,memory,memory_one_view,key_forward",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print each contender's time by op type (2 traced steps)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3))
    images = images.astype("uint8")
    steps = {}
    for name in args.contenders.split(","):
        base, _, precision = name.partition("@")
        with dtype_policy(precision or args.precision):
            steps[name] = build(base, args, images)
    results = alternate(steps, cycles=args.cycles, warmup=args.warmup)
    baseline = next(iter(steps))
    vs = {}
    for name in steps:
        base, _, precision = name.partition("@")
        if precision:
            vs[name] = base if base in steps else baseline
        elif VERSUS.get(name) in steps:
            vs[name] = VERSUS[name]
    print(machine())
    print(
        f"precision: {args.precision}, batch {args.batch}, width "
        f"{args.width}, {args.size} px, {args.cycles} cycles"
    )
    print(report(results, baseline=baseline, vs=vs))
    if {"memory", "pretrain", "key_forward"} <= set(steps):
        print(
            "memory / (pretrain + key_forward), its operation-count floor: "
            + summary(results, "memory", ("pretrain", "key_forward"))
        )
    if args.profile:
        for name, step in steps.items():
            print(f"{name}, by op type (2 traced steps):")
            print(op_table(op_times(step, steps=2), top=20))


if __name__ == "__main__":
    main()
