"""SimCLRv2 step cost on CPU: pretraining vs supervised, memory on vs off.

(a) One pretraining step (two views of B images, NT-Xent, no memory)
    divided by one supervised step on the same 2·B images with the same
    backbone: the floor for two views is 1.0.
(b) The same pretraining step with a 65,536-entry memory (momentum encoder
    forward pass of both views + queue negatives), relative to memory off;
    and with `memory_views=1` (keys of the first view only, as MoCo).

    PYTHONPATH=. python benchmarks/simclrv2_step.py --batch 256 --width 1

Prints one markdown table with the command and the machine.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_ssl  # noqa: E402
from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.layers import Views  # noqa: E402
from keras_ssl.models import SimCLRv2Pretrainer  # noqa: E402


def _time(model, data, warmup, steps):
    ds = tf.data.Dataset.from_tensors(data).repeat()
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(
        ds,
        steps_per_epoch=steps,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[Timer()],
    )
    return statistics.median(times)


def _encoder(args):
    return ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(args.size, args.size, 3),
    )


def supervised_step(args, images):
    encoder = _encoder(args)
    model = keras.Sequential([encoder, keras.layers.Dense(10)])
    model.compile(
        optimizer=keras_ssl.optimizers.LARS(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.concatenate([images, images]).astype("float32") / 255.0
    y = np.zeros(len(x), "int32")
    return _time(model, (x, y), args.warmup, args.steps)


def pretrain_step(args, images, memory_size, memory_views=2):
    model = SimCLRv2Pretrainer(
        _encoder(args),
        views=Views.from_preset("simclr_cifar", size=args.size),
        memory_size=memory_size,
        memory_views=memory_views,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
    return _time(model, images, args.warmup, args.steps)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--memory", type=int, default=65536)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3))
    images = images.astype("uint8")
    supervised = supervised_step(args, images)
    plain = pretrain_step(args, images, 0)
    memory = pretrain_step(args, images, args.memory)
    memory_one_view = pretrain_step(args, images, args.memory, 1)
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}")
    print("| step | s/step | ratio |")
    print("| --- | --- | --- |")
    print(f"| supervised, 2×{args.batch} images | {supervised:.3f} | 1.00 |")
    print(
        f"| pretrain, memory off | {plain:.3f} | "
        f"{plain / supervised:.2f} (vs supervised) |"
    )
    print(
        f"| pretrain, memory {args.memory} | {memory:.3f} | "
        f"{memory / plain:.3f} (vs memory off) |"
    )
    print(
        f"| pretrain, memory {args.memory}, keys of one view | "
        f"{memory_one_view:.3f} | {memory_one_view / plain:.3f} "
        "(vs memory off) |"
    )


if __name__ == "__main__":
    main()
