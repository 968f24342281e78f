"""Host memory (peak RSS) while streaming 1x and 10x as many images.

Writes JPEG folders of `--images` and 10 x `--images` images of varied
sizes (under `--folder`, default /tmp), then, each in a fresh process,
reads one whole epoch of each folder and reports the process's peak
resident set size (`ru_maxrss`) above what importing TensorFlow costs:

- `stream`: `keras_ssl.data.streaming.ImageStream` (crop `"full"`, 64
  px, batches of 64), what the recipes' streamed data sets use;
- `in_memory`: the same images decoded and resized into one uint8
  array, as the in-memory recipes' `ArraySplits` hold them.

The stream's peak must not grow with the data set; the array's grows
with it. Run from the repository root:

    PYTHONPATH=. python benchmarks/streaming_memory.py
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_folder(folder, count, seed=0):
    """`count` JPEGs (sides 48 to 160 px) in 10 class folders."""
    import numpy as np
    import tensorflow as tf

    if os.path.isdir(folder) and len(os.listdir(folder)) == 10:
        return
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = (int(v) for v in rng.integers(48, 160, 2))
        small = rng.integers(0, 256, (1, 8, 8, 3)).astype("float32")
        image = tf.image.resize(small, (height, width))[0]
        path = os.path.join(folder, f"c{i % 10}", f"c{i % 10}_{i}.JPEG")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_jpeg(tf.cast(image, tf.uint8)))


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(folder, mode):
    """One epoch of `folder`, in this process: peak RSS figures (MiB)."""
    import numpy as np
    import tensorflow as tf

    from keras_ssl.data import from_directory
    from keras_ssl.data import streaming

    tf.constant(0)
    start = peak_mib()
    count = 0
    if mode == "stream":
        table = streaming.list_folder(folder)
        stream = streaming.ImageStream(
            table, 64, 64, shuffle=True, repeat=False
        )
        for images, _, _ in stream.to_tf_dataset():
            count += len(images)
    else:
        data = from_directory(folder, image_size=64, batch_size=64)
        array = np.concatenate([x.numpy() for x, _ in data])
        count = len(array)
    return {
        "images": count,
        "peak_rss_mib": peak_mib(),
        "above_import_mib": peak_mib() - start,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="/tmp/keras_ssl_memory_bench")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    results = {}
    for factor in (1, 10):
        folder = os.path.join(args.folder, f"x{factor}")
        write_folder(folder, factor * args.images)
        for mode in ("stream", "in_memory"):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", folder, mode],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[f"{mode}_x{factor}"] = json.loads(out.splitlines()[-1])
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "args": vars(args),
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
