"""SimCLRv2's MoCo memory on the digits preset: pretrain + fine-tune.

Runs `SimCLRv2Config.digits()` with the memory size and EMA given, image
ids fed (as the recipe does), and prints the stage metrics and what the
memory's keys look like under the final weights:

- the queue's mean pairwise cosine (near 1: collapsed keys);
- the mean cosine of an image's online projection and its key from the
  memory network (near 1: the keys come from the same function);
- the share of each query's softmax negative weight on images of its own
  class, among the in-batch candidates and with the queue added.

    PYTHONPATH=. python benchmarks/simclrv2_memory.py --memory_size 1024 \\
        --memory_momentum 0.99

`--memory_size 0` runs the preset without a memory, for comparison.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ssl.recipes import simclrv2  # noqa: E402
from keras_ssl.recipes.runner import load_data  # noqa: E402


def _unit(z):
    z = np.asarray(keras.ops.convert_to_numpy(z), np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _mean_pairwise_cosine(z):
    n = len(z)
    return float(((z @ z.T).sum() - n) / (n * n - n))


def _same_class_share(logits, same):
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return float(np.mean((weights * same).sum(axis=1)))


def memory_report(model, config, count=256):
    """The key diagnostics above, on the first `count` training images."""
    splits, _ = load_data(config)
    x = keras.ops.cast(splits.x_train[:count], "float32") / 255.0
    y = splits.y_train[:count]
    h = model.encoder(x, training=True)
    queries = _unit(model.head(h, training=True)[-1])
    h = model.momentum_encoder(x, training=True)
    keys_now = _unit(model.momentum_head(h, training=True)[-1])
    queue, valid = (keras.ops.convert_to_numpy(t) for t in model.queue.read())
    ids = keras.ops.convert_to_numpy(model.queue.read_ids())
    keep = valid.astype(bool) & (ids >= 0)
    keys, key_ids = _unit(queue[keep]), ids[keep]
    in_batch = queries @ queries.T / config.temperature
    np.fill_diagonal(in_batch, -np.inf)
    from_queue = queries @ keys.T / config.temperature
    from_queue[key_ids[None, :] == np.arange(count)[:, None]] = -np.inf
    same_batch = y[:, None] == y[None, :]
    same_queue = y[:, None] == splits.y_train[key_ids][None, :]
    return {
        "queue mean pairwise cosine": _mean_pairwise_cosine(
            _unit(queue[valid.astype(bool)])
        ),
        "same-image query/key cosine": float(
            np.mean(np.sum(queries * keys_now, axis=1))
        ),
        "same-class share of negative weight, in-batch": _same_class_share(
            in_batch, same_batch
        ),
        "same-class share of negative weight, with the queue": (
            _same_class_share(
                np.concatenate([in_batch, from_queue], axis=1),
                np.concatenate([same_batch, same_queue], axis=1),
            )
        ),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory_size", type=int, default=1024)
    parser.add_argument("--memory_momentum", type=float, default=0.999)
    parser.add_argument("--output_dir", default="runs/bench_memory")
    parser.add_argument("--epochs", type=int, help="preset's when unset")
    args = parser.parse_args()
    started = time.time()
    config = simclrv2.SimCLRv2Config.digits(
        memory_size=args.memory_size,
        memory_momentum=args.memory_momentum,
        stages=("pretrain", "finetune"),
        export=False,
        **({"epochs": args.epochs} if args.epochs else {}),
        output_dir=f"{args.output_dir}/m{args.memory_size}_"
        f"{args.memory_momentum}",
        verbose=0,
    )
    result = simclrv2.fit(config)
    print(
        f"memory_size={args.memory_size} "
        f"memory_momentum={args.memory_momentum} "
        f"{time.time() - started:.0f} s"
    )
    print(result.summary())
    model = result.models["pretrainer"]
    if model.queue is not None:
        for name, value in memory_report(model, config).items():
            print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
