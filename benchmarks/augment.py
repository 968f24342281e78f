"""Views per second: batched on-device augmentation vs per-image `tf.image`.

Compares, in one process on the same cores, SimCLR's ImageNet views (2 views
of 224 px per image: random resized crop, flip, colour distortion with random
order, grayscale, blur with p = 0.5) made by

- `keras_ssl.layers.Views.from_preset("simclr_imagenet")` on a batch of uint8
  images, under `tf.function` with and without `jit_compile`, and
- a per-image `tf.data.Dataset.map(num_parallel_calls=AUTOTUNE)` pipeline
  written with `tf.image` the way SimCLR's `data_util.py` does it
  (`sample_distorted_bounding_box` + crop + bicubic resize, random flip,
  `random_brightness/contrast/saturation/hue` in a random order with
  `tf.switch_case`, grayscale, blur by depthwise convolution, each applied
  with `tf.cond` so an image only pays for what it gets).

Both start from the same in-memory uint8 images, so no decoding is timed.
It also reports the CIFAR presets (`simclr_cifar`, `paws_cifar`) for the
batched layers. Run from the repository root:

    KERAS_BACKEND=tensorflow python benchmarks/augment.py

With `KERAS_BACKEND=jax` it times only the batched layers, under `jax.jit`
on JAX's default device (a GPU where there is one), for every preset.

`--batches` and `--batch-size` trade time for precision; the defaults take
about 4 minutes on 2 CPU cores. Besides images/s it reports CPU milliseconds
per image (process time over all threads), which stays comparable when other
processes share the machine.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

# Run as a script from a checkout: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_ssl.layers import Views  # noqa: E402

# --- per-image tf.image baseline (SimCLR data_util style) -----------------


def _random_apply(fn, p, image):
    return tf.cond(tf.random.uniform([]) < p, lambda: fn(image), lambda: image)


def _crop_and_resize(image, size, area_range):
    bbox = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=bbox,
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    y0, x0, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop_size)
    image = tf.image.crop_to_bounding_box(image, y0, x0, h, w)
    return tf.image.resize(image, [size, size], method="bicubic")


def _color_jitter(image, strength):
    b, c, s = 0.8 * strength, 0.8 * strength, 0.8 * strength
    h = 0.2 * strength

    def apply(index, x):
        branches = [
            lambda: x * tf.random.uniform([], max(0.0, 1.0 - b), 1.0 + b),
            lambda: tf.image.random_contrast(x, 1.0 - c, 1.0 + c),
            lambda: tf.image.random_saturation(x, 1.0 - s, 1.0 + s),
            lambda: tf.image.random_hue(x, h),
        ]
        return tf.switch_case(index, branches)

    order = tf.random.shuffle(tf.range(4))
    for i in range(4):
        image = tf.clip_by_value(apply(order[i], image), 0.0, 1.0)
    return image


def _grayscale(image):
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def _blur(image, size):
    sigma = tf.random.uniform([], 0.1, 2.0)
    radius = size // 10 // 2
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(taps**2) / (2.0 * sigma**2))
    kernel /= tf.reduce_sum(kernel)
    kernel_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    kernel_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    x = image[None]
    x = tf.nn.depthwise_conv2d(x, kernel_h, [1, 1, 1, 1], "SAME")
    x = tf.nn.depthwise_conv2d(x, kernel_w, [1, 1, 1, 1], "SAME")
    return x[0]


def tf_image_view(image, size=224, strength=1.0, blur_p=0.5):
    """One SimCLR training view of one uint8 image, with `tf.image`."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = _crop_and_resize(image, size, (0.08, 1.0))
    image = tf.image.random_flip_left_right(image)
    image = _random_apply(lambda x: _color_jitter(x, strength), 0.8, image)
    image = _random_apply(_grayscale, 0.2, image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if blur_p > 0:
        image = _random_apply(lambda x: _blur(x, size), blur_p, image)
    return image


def tf_image_dataset(images, batch_size, size, strength, blur_p):
    def two_views(image):
        return (
            tf_image_view(image, size, strength, blur_p),
            tf_image_view(image, size, strength, blur_p),
        )

    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    ds = ds.map(two_views, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(2)


# --- timing ----------------------------------------------------------------


class _Timer:
    """Wall time and process CPU time (all threads) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _rates(n_images, n_views, timer):
    return {
        "images_per_s": n_images / timer.wall,
        "views_per_s": n_images * n_views / timer.wall,
        # CPU time per image, summed over threads: comparable even when
        # other processes share the cores.
        "cpu_ms_per_image": 1e3 * timer.cpu / n_images,
    }


def time_batched(preset, images, batches, jit_compile):
    """Throughput of `Views.from_preset(preset)` on one repeated batch."""
    views = Views.from_preset(preset, seed=0)
    fn = tf.function(lambda x: views(x, training=True), jit_compile=jit_compile)
    x = tf.constant(images)
    with _Timer() as first:  # trace + compile
        [v.numpy() for v in fn(x)]
    with _Timer() as timer:
        for _ in range(batches):
            out = fn(x)
            [v.numpy() for v in out]
    result = _rates(batches * images.shape[0], len(out), timer)
    result["first_call_s"] = first.wall
    return result


def time_batched_jax(preset, images, batches):
    """Throughput of `Views.from_preset(preset)` under `jax.jit`."""
    import jax

    views = Views.from_preset(preset, seed=0)
    state = [v.value for v in views.non_trainable_variables]
    fn = jax.jit(
        lambda state, x: views.stateless_call([], state, x, training=True)
    )
    x = jax.device_put(images)
    with _Timer() as first:
        out, state = jax.block_until_ready(fn(state, x))
    with _Timer() as timer:
        for _ in range(batches):
            out, state = fn(state, x)
        jax.block_until_ready(out)
    result = _rates(batches * images.shape[0], len(out), timer)
    result["first_call_s"] = first.wall
    return result


def main_jax(args, images, cifar):
    import jax

    device = jax.devices()[0]
    print(
        f"# JAX {jax.__version__} on {device.device_kind}, batch {len(images)}"
    )
    results = {"device": device.device_kind, "batch_size": len(images)}
    print(f"{'preset':18s} {'images/s':>10s} {'views/s':>10s}")
    presets = [
        ("simclr_imagenet", images),
        ("paws_imagenet", images),
        ("semppl_imagenet", images),
        ("simclr_cifar", cifar),
        ("paws_cifar", cifar),
    ]
    for preset, x in presets:
        r = time_batched_jax(preset, x, args.jax_batches)
        results[preset] = r
        print(
            f"{preset:18s} {r['images_per_s']:10.1f} {r['views_per_s']:10.1f}"
        )
    return results


def time_tf_data(images, batch_size, batches, size, strength, blur_p):
    """Throughput of the per-image `tf.data` pipeline."""
    ds = tf_image_dataset(images, batch_size, size, strength, blur_p)
    iterator = iter(ds)
    # Drain what the workers and the prefetch buffer made while idle, so
    # that the timed batches are produced at the steady-state rate.
    for _ in range(3):
        next(iterator)
    with _Timer() as timer:
        for _ in range(batches):
            out = next(iterator)
        [v.numpy() for v in out]
    return _rates(batches * batch_size, 2, timer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--cifar-batches", type=int, default=10)
    parser.add_argument(
        "--skip-eager-graph",
        action="store_true",
        help="skip the (slow) tf.function runs without jit_compile",
    )
    parser.add_argument(
        "--jax-batches", type=int, default=20, help="timed batches on JAX"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 224, 224, 3), np.uint8)
    cifar = rng.integers(0, 256, (args.batch_size, 32, 32, 3), np.uint8)
    if keras.backend.backend() == "jax":
        results = main_jax(args, images, cifar)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "tensorflow": tf.__version__,
        "batch_size": args.batch_size,
        "load_average_at_start": load,
    }
    print(
        f"# {results['machine']}, TF {tf.__version__}, "
        f"batch {args.batch_size}, load average {load:.1f}"
    )
    jits = (True,) if args.skip_eager_graph else (True, False)
    rows = []

    def record(key, name, result):
        results[key] = result
        rows.append((name, result))

    r = time_tf_data(images, args.batch_size, args.batches, 224, 1.0, 0.5)
    record("simclr_imagenet_tf_data", "simclr_imagenet, per-image tf.image", r)
    for jit in jits:
        r = time_batched("simclr_imagenet", images, args.batches, jit)
        record(
            f"simclr_imagenet_views_jit={jit}",
            f"simclr_imagenet, Views, jit_compile={jit}",
            r,
        )
    r = time_tf_data(cifar, args.batch_size, args.cifar_batches, 32, 0.5, 0)
    record("simclr_cifar_tf_data", "simclr_cifar, per-image tf.image", r)
    for preset in ("simclr_cifar", "paws_cifar"):
        for jit in jits:
            r = time_batched(preset, cifar, args.cifar_batches, jit)
            record(
                f"{preset}_views_jit={jit}",
                f"{preset}, Views, jit_compile={jit}",
                r,
            )

    print(
        f"{'pipeline':46s} {'images/s':>9s} {'views/s':>9s} {'cpu ms/img':>10s}"
    )
    for name, r in rows:
        print(
            f"{name:46s} {r['images_per_s']:9.1f} {r['views_per_s']:9.1f} "
            f"{r['cpu_ms_per_image']:10.2f}"
        )
    for dataset in ("simclr_imagenet", "simclr_cifar"):
        base = results[f"{dataset}_tf_data"]
        for jit in jits:
            ours = results[f"{dataset}_views_jit={jit}"]
            wall = ours["images_per_s"] / base["images_per_s"]
            cpu = base["cpu_ms_per_image"] / ours["cpu_ms_per_image"]
            results[f"{dataset}_speedup_jit={jit}"] = {"wall": wall, "cpu": cpu}
            print(
                f"{dataset} speed-up per image, jit_compile={jit}: "
                f"{wall:.2f}x (wall), {cpu:.2f}x (CPU time)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
