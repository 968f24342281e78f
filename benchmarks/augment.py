"""Views per second: batched on-device augmentation vs per-image `tf.image`.

Compares, in one process on the same cores, SimCLR's ImageNet views (2 views
of 224 px per image: random resized crop, flip, colour distortion with random
order, grayscale, blur with p = 0.5) made by

- `keras_ssl.layers.Views.from_preset("simclr_imagenet")` on a batch of uint8
  images, under `tf.function(jit_compile=True)`, inside an uncompiled
  `tf.function` as the models' training steps call it in `fit()` on a CPU
  (`views_in_step`: the layer runs as its own compiled functions, one XLA
  launch per view; `views_in_step_one_launch`: the whole layer in one
  launch, as before), and once without XLA, and
- a per-image `tf.data.Dataset.map(num_parallel_calls=AUTOTUNE)` pipeline
  written with `tf.image` the way SimCLR's `data_util.py` does it
  (`sample_distorted_bounding_box` + crop + bicubic resize, random flip,
  `random_brightness/contrast/saturation/hue` in a random order with
  `tf.switch_case`, grayscale, blur by depthwise convolution, each applied
  with `tf.cond` so an image only pays for what it gets), batched after the
  map and tuned as SimCLR's `data.py` tunes its training input
  (`deterministic=False`, `experimental_slack=True`, prefetch AUTOTUNE).

Both start from the same in-memory uint8 images, so no decoding is timed,
and both leave their views as tensors, as a training step would use them.
The compared pipelines run interleaved, `--rounds` times each, so
that a change in the machine's load hits both; each round starts with
`--warmup` untimed batches; each `tf.data` round starts a fresh iterator and
deletes it after its timed batches, so that no background work leaks into
the next measurement. It also reports the CIFAR presets (`simclr_cifar`
against its baseline, and `paws_cifar`). Run from the repository root:

    KERAS_BACKEND=tensorflow python benchmarks/augment.py

With `KERAS_BACKEND=jax` it times only the batched layers, under `jax.jit`
on JAX's default device (a GPU where there is one), for every preset.

`--batches`, `--rounds` and `--batch-size` trade time for precision; the
defaults take about 2 minutes on 2 CPU cores. Besides images/s it reports CPU
milliseconds per image (process time over all threads), which stays
comparable when other processes share the machine, the cores each pipeline
kept busy (CPU time / wall time), and the per-round speed-ups, whose spread
shows how noisy the machine was. `--runnable-threads` (Linux) also samples,
in an extra untimed round, how many of the process's threads are running or
waiting for a core while each 224-px pipeline works: what it would use of
an idle machine.
"""

import argparse
import gc
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
from keras_ssl.models._compiled_call import compiled_call  # noqa: E402

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

    # SimCLR's data.py: non-deterministic order and slack for training,
    # parallel map, batch after the map, prefetch.
    options = tf.data.Options()
    options.deterministic = False
    options.experimental_slack = True
    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    ds = ds.with_options(options)
    ds = ds.map(two_views, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- timing ----------------------------------------------------------------


class _Timer:
    """Wall time and process CPU time (all threads) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _rates(n_images, n_views, wall, cpu):
    return {
        "images_per_s": n_images / wall,
        "views_per_s": n_images * n_views / wall,
        # CPU time per image, summed over threads: comparable even when
        # other processes share the cores.
        "cpu_ms_per_image": 1e3 * cpu / n_images,
        # Cores kept busy on average.
        "cores": cpu / wall,
    }


def batched_window(preset, images, jit_compile, warmup=0):
    """A function timing `batches` calls of `Views.from_preset(preset)`.

    The layer is traced and compiled here, untimed; each window starts with
    `warmup` untimed calls, as the `tf.data` windows do. With
    `jit_compile="in_step"` the views are made as the models' training
    steps make them inside `fit()` on a CPU: an uncompiled `tf.function`
    that calls the layer's own compiled functions (`compiled_call`, one
    per view); with `"in_step_one_launch"`, the uncompiled function calls
    one compiled function of the whole layer.
    """
    views = Views.from_preset(preset, seed=0)
    if jit_compile == "in_step":
        fn = tf.function(lambda x: compiled_call(views, x, training=True))
    elif jit_compile == "in_step_one_launch":
        inner = tf.function(
            lambda x: views(x, training=True),
            jit_compile=True,
            autograph=False,
        )
        fn = tf.function(lambda x: inner(x))
    else:
        fn = tf.function(
            lambda x: views(x, training=True), jit_compile=jit_compile
        )
    x = tf.constant(images)
    n_views = len(views.specs)
    fn(x)

    def window(batches):
        for _ in range(warmup):
            fn(x)
        # Eager calls on a CPU are synchronous: each call has made its
        # views when it returns. They stay tensors, as in a training step
        # (copying them to NumPy costs 0.1 ms per 224-px view).
        with _Timer() as timer:
            for _ in range(batches):
                fn(x)
        return batches * images.shape[0], n_views, timer

    window.work = lambda: lambda: fn(x)
    return window


def tf_data_window(images, batch_size, size, strength, blur_p, warmup):
    """A function timing `batches` batches of the per-image pipeline."""
    ds = tf_image_dataset(images, batch_size, size, strength, blur_p)

    def window(batches):
        iterator = iter(ds)
        # Untimed: the first batches pay for starting the workers and
        # AUTOTUNE's ramp-up; after them the buffers are empty and the
        # timed batches come at the steady-state rate.
        for _ in range(warmup):
            next(iterator)
        # `next` returns once the batch is made; it stays tensors too.
        with _Timer() as timer:
            for _ in range(batches):
                next(iterator)
        # Deleting the iterator stops its workers, which would otherwise
        # keep filling the buffers during the next measurement.
        del iterator
        gc.collect()
        return batches * batch_size, 2, timer

    def work():
        # A fresh iterator after the untimed batches; it lives as long as
        # the returned function.
        iterator = iter(ds)
        for _ in range(warmup):
            next(iterator)
        return lambda: next(iterator)

    window.work = work
    return window


def runnable_threads(windows, batches, interval=0.005):
    """Mean number of this process's threads running or runnable.

    Samples `/proc/self/task/*/stat` every `interval` s from a thread of
    its own (left out of the count) while each window makes `batches`
    batches, untimed: on a loaded machine the threads a pipeline keeps
    runnable show what it would use of an idle one.
    """
    import threading

    def sample(stop, counts):
        me = str(threading.get_native_id())
        while not stop.is_set():
            n = 0
            for tid in os.listdir("/proc/self/task"):
                if tid == me:
                    continue
                try:
                    with open(f"/proc/self/task/{tid}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                n += stat.rsplit(")", 1)[1].split()[0] == "R"
            counts.append(n)
            time.sleep(interval)

    results = {}
    for name, window in windows.items():
        work = window.work()
        work()
        stop, counts = threading.Event(), []
        sampler = threading.Thread(target=sample, args=(stop, counts))
        sampler.start()
        for _ in range(batches):
            work()
        stop.set()
        sampler.join()
        del work
        gc.collect()
        results[name] = float(np.mean(counts))
    return results


def interleaved(windows, rounds, batches):
    """Runs the named windows in turn, `rounds` times; totals and rounds."""
    totals = {name: [0, 0, 0.0, 0.0] for name in windows}
    per_round = {name: [] for name in windows}
    for _ in range(rounds):
        for name, window in windows.items():
            n_images, n_views, timer = window(batches)
            total = totals[name]
            total[0] += n_images
            total[1] = n_views
            total[2] += timer.wall
            total[3] += timer.cpu
            per_round[name].append(
                _rates(n_images, n_views, timer.wall, timer.cpu)
            )
    results = {}
    for name, (n_images, n_views, wall, cpu) in totals.items():
        results[name] = _rates(n_images, n_views, wall, cpu)
        results[name]["rounds"] = per_round[name]
    return results


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
    result = _rates(batches * images.shape[0], len(out), timer.wall, timer.cpu)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--batches", type=int, default=3, help="timed batches per round"
    )
    parser.add_argument(
        "--cifar-batches", type=int, default=10, help="the same for CIFAR"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds of each compared pipeline",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed batches at the start of each round",
    )
    parser.add_argument(
        "--skip-eager-graph",
        action="store_true",
        help="skip the (slow) tf.function runs without jit_compile",
    )
    parser.add_argument(
        "--jax-batches", type=int, default=20, help="timed batches on JAX"
    )
    parser.add_argument(
        "--runnable-threads",
        action="store_true",
        help="also sample the threads each 224-px pipeline keeps runnable",
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
    # Several tf.functions are traced on purpose; no retracing warnings.
    tf.get_logger().setLevel("ERROR")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "tensorflow": tf.__version__,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "load_average_at_start": load,
    }
    print(
        f"# {results['machine']}, TF {tf.__version__}, "
        f"batch {args.batch_size}, {args.rounds} rounds, "
        f"load average {load:.1f}"
    )
    size = args.batch_size
    imagenet = {
        "tf_data": tf_data_window(images, size, 224, 1.0, 0.5, args.warmup),
        "views_jit=True": batched_window(
            "simclr_imagenet", images, True, args.warmup
        ),
        "views_in_step": batched_window(
            "simclr_imagenet", images, "in_step", args.warmup
        ),
        "views_in_step_one_launch": batched_window(
            "simclr_imagenet", images, "in_step_one_launch", args.warmup
        ),
    }
    comparisons = {
        "simclr_imagenet": interleaved(imagenet, args.rounds, args.batches),
        "simclr_cifar": interleaved(
            {
                "tf_data": tf_data_window(cifar, size, 32, 0.5, 0, args.warmup),
                "views_jit=True": batched_window(
                    "simclr_cifar", cifar, True, args.warmup
                ),
                "paws_cifar_views_jit=True": batched_window(
                    "paws_cifar", cifar, True, args.warmup
                ),
            },
            args.rounds,
            args.cifar_batches,
        ),
    }
    if not args.skip_eager_graph:
        # Without XLA the layers are slow: one window, not interleaved.
        for preset, x, batches in (
            ("simclr_imagenet", images, 1),
            ("simclr_cifar", cifar, args.cifar_batches),
        ):
            n_images, n_views, timer = batched_window(preset, x, False)(batches)
            comparisons[preset]["views_jit=False"] = _rates(
                n_images, n_views, timer.wall, timer.cpu
            )

    if args.runnable_threads:
        results["simclr_imagenet_runnable_threads"] = runnable_threads(
            imagenet, args.batches
        )
    print(
        f"{'pipeline':46s} {'images/s':>9s} {'views/s':>9s} "
        f"{'cpu ms/img':>10s} {'cores':>5s}"
    )
    for dataset, rows in comparisons.items():
        for name, r in rows.items():
            key = f"{dataset}_{name}".replace(
                "simclr_cifar_paws_cifar", "paws_cifar"
            )
            results[key] = r
            print(
                f"{key:46s} {r['images_per_s']:9.1f} {r['views_per_s']:9.1f} "
                f"{r['cpu_ms_per_image']:10.2f} {r['cores']:5.2f}"
            )
    for dataset, rows in comparisons.items():
        base = rows["tf_data"]
        for name in (
            "views_jit=True",
            "views_in_step",
            "views_in_step_one_launch",
            "views_jit=False",
        ):
            if name not in rows:
                continue
            ours = rows[name]
            wall = ours["images_per_s"] / base["images_per_s"]
            cpu = base["cpu_ms_per_image"] / ours["cpu_ms_per_image"]
            speedup = {"wall": wall, "cpu": cpu}
            line = (
                f"{dataset} speed-up per image, {name}: {wall:.2f}x (wall), "
                f"{cpu:.2f}x (CPU time)"
            )
            if "rounds" in ours:
                walls = [
                    o["images_per_s"] / b["images_per_s"]
                    for o, b in zip(ours["rounds"], base["rounds"])
                ]
                cpus = [
                    b["cpu_ms_per_image"] / o["cpu_ms_per_image"]
                    for o, b in zip(ours["rounds"], base["rounds"])
                ]
                speedup["wall_rounds"] = walls
                speedup["cpu_rounds"] = cpus
                line += (
                    f"; rounds {min(walls):.2f}-{max(walls):.2f}x (wall), "
                    f"{min(cpus):.2f}-{max(cpus):.2f}x (CPU)"
                )
            results[f"{dataset}_speedup_{name}"] = speedup
            print(line)
    if args.runnable_threads:
        print(
            "simclr_imagenet runnable threads (mean): "
            + ", ".join(
                f"{name} {n:.2f}"
                for name, n in results[
                    "simclr_imagenet_runnable_threads"
                ].items()
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
