"""Input images/s from a JPEG folder at 224 px: the streaming pipeline vs
SimCLR's host input.

Writes (once, under `--folder`) a folder of ImageNet-sized JPEGs (sides
drawn around ImageNet's 500 x 375, content: CIFAR-10 images upsampled
with mild noise, so the files have photo-like sizes), then times, in one
process and in alternating rounds so that a change in the machine's load
hits all of them:

- `simclr_host`: a `tf.data` pipeline built as SimCLR's `data.py` builds
  its pretraining input: read, decode the whole JPEG, then for each of
  the two views an inception crop (`sample_distorted_bounding_box`),
  bicubic resize, flip and the colour distortion on the host (the
  `tf.image` views of `benchmarks/augment.py`, without blur, which
  SimCLR applies on the accelerator); non-deterministic order.
- `stream_full`: `keras_ssl.data.streaming.ImageStream` with
  `crop="full"`, the pretraining stream: the centred square window
  decoded (`decode_and_crop_jpeg`) and resized to 224, uint8; the views
  are made on the accelerator.
- `stream_random`: the same with `crop="random"` (an inception window
  decoded and resized, and a flip), the fine-tuning input.

Reports images/s, CPU ms per image (process time over all threads) and
the ratio to `simclr_host` within each round. With `--gpu-images-per-s`
(a published ResNet-50 training throughput) it also reports the CPU
cores the stream needs to feed it. Run from the repository root:

    PYTHONPATH=. python benchmarks/input_pipeline.py --threads 2

Images never leave `--folder` (default under /tmp); nothing is committed.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from augment import tf_image_view  # noqa: E402

from keras_ssl.data import streaming  # noqa: E402
from keras_ssl.data.streaming.image_stream import with_options  # noqa: E402

CIFAR = "/work/shared/datasets/cifar10/train.npz"


def write_folder(folder, count, seed=0):
    """`count` JPEGs in 10 class folders, ImageNet-like sizes."""
    if os.path.isdir(folder) and len(os.listdir(folder)) == 10:
        return
    rng = np.random.default_rng(seed)
    with np.load(CIFAR) as arrays:
        x, y = arrays["x"], arrays["y"]
    rows = rng.choice(len(x), count, replace=False)
    for i, row in enumerate(rows):
        long_side = int(rng.integers(400, 600))
        short_side = int(long_side * rng.uniform(0.6, 0.8))
        size = (short_side, long_side) if i % 4 else (long_side, short_side)
        image = tf.image.resize(x[row][None].astype("float32"), size, "bicubic")
        image += rng.normal(0, 10, (1, *size, 3))
        image = tf.cast(tf.clip_by_value(image[0], 0, 255), tf.uint8)
        path = os.path.join(folder, f"c{y[row]}", f"c{y[row]}_{i}.JPEG")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_jpeg(image, quality=90))


def simclr_host(files, batch_size, threads):
    """SimCLR's pretraining input, as in the module docstring."""

    def two_views(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        view = lambda: tf_image_view(image, 224, 1.0, blur_p=0.0)  # noqa: E731
        return view(), view()

    options = tf.data.Options()
    options.deterministic = False
    options.experimental_slack = True
    if threads:
        options.threading.private_threadpool_size = threads
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files)).repeat()
    ds = ds.with_options(options)
    ds = ds.map(two_views, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def ours(table, batch_size, crop, threads):
    stream = streaming.ImageStream(table, batch_size, 224, crop=crop)
    return with_options(stream.to_tf_dataset(), threads)


def window(dataset, batch_size, warmup):
    def run(batches):
        iterator = iter(dataset)
        for _ in range(warmup):
            next(iterator)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(iterator)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        del iterator
        return batches * batch_size, wall, cpu

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="/tmp/keras_ssl_jpeg_bench")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--gpu-images-per-s", type=float, default=None)
    args = parser.parse_args()
    write_folder(args.folder, args.images)
    table = streaming.list_folder(args.folder)
    files = [p.decode() for p in table.sources]
    sizes = [os.path.getsize(f) for f in files[:200]]
    pipelines = {
        "simclr_host": simclr_host(files, args.batch_size, args.threads),
        "stream_full": ours(table, args.batch_size, "full", args.threads),
        "stream_random": ours(table, args.batch_size, "random", args.threads),
    }
    windows = {
        name: window(ds, args.batch_size, args.warmup)
        for name, ds in pipelines.items()
    }
    rounds = {name: [] for name in windows}
    for _ in range(args.rounds):
        for name, run in windows.items():
            rounds[name].append(run(args.batches))
    results = {}
    for name, measured in rounds.items():
        images = sum(m[0] for m in measured)
        wall = sum(m[1] for m in measured)
        cpu = sum(m[2] for m in measured)
        results[name] = {
            "images_per_s": images / wall,
            "cpu_ms_per_image": 1e3 * cpu / images,
            "per_round_images_per_s": [m[0] / m[1] for m in measured],
        }
    for name in ("stream_full", "stream_random"):
        results[name]["speedup_per_round"] = [
            (m[0] / m[1]) / (b[0] / b[1])
            for m, b in zip(rounds[name], rounds["simclr_host"])
        ]
        results[name]["speedup"] = (
            results[name]["images_per_s"]
            / results["simclr_host"]["images_per_s"]
        )
    if args.gpu_images_per_s:
        for name in results:
            per_core = 1e3 / results[name]["cpu_ms_per_image"]
            needed = args.gpu_images_per_s / per_core
            results[name]["cores_to_feed_gpu"] = needed
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs",
                "tensorflow": tf.__version__,
                "images": len(files),
                "mean_file_kb": float(np.mean(sizes) / 1024),
                "args": vars(args),
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
