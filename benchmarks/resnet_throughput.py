"""ResNet-50 training-step throughput on CPU (TensorFlow backend).

Times a train-like step of `keras_ssl.backbones.ResNet` (depth 50, 1x,
ImageNet stem): forward in training mode, loss = mean of the pooled
features, gradients of all trainable weights (no optimizer update). The step
is a `tf.function`, timed once as a plain graph and once compiled with XLA
(`jit_compile=True`). Each mode runs `--warmup` untimed steps (the first one
traces and compiles), then `--steps` timed steps.

Prints one markdown row for docs/benchmarks.md:
`| command | machine | batch | px | graph img/s | XLA img/s |`.

Usage (from the repository root; `PYTHONPATH=.` unless keras_ssl is
installed):
    PYTHONPATH=. python benchmarks/resnet_throughput.py --warmup 2 --steps 5
"""

import argparse
import os
import platform
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_ssl.backbones import ResNet  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def nproc():
    # What `nproc` prints: the CPUs this process may run on.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def make_step(model, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def step(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        # One scalar that depends on every gradient, so none is pruned and
        # little is copied back to the host.
        return loss, tf.linalg.global_norm(grads)

    return step


def time_steps(step, images, warmup, steps):
    """Returns (seconds of the first call, list of timed step seconds)."""
    start = time.perf_counter()
    step(images)[1].numpy()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step(images)[1].numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images)[1].numpy()  # .numpy() waits for the step to finish.
        times.append(time.perf_counter() - start)
    return first, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--modes",
        default="graph,xla",
        help="comma-separated subset of graph,xla",
    )
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")

    keras.utils.set_random_seed(0)
    model = ResNet(depth=50, input_shape=(args.size, args.size, 3))
    images = tf.random.uniform((args.batch, args.size, args.size, 3))

    results = {}
    for mode in args.modes.split(","):
        step = make_step(model, jit_compile=mode == "xla")
        try:
            first, times = time_steps(step, images, args.warmup, args.steps)
        except Exception as e:  # XLA may be unavailable on some builds.
            print(f"{mode}: failed: {type(e).__name__}: {e}", file=sys.stderr)
            results[mode] = "failed"
            continue
        mean = sum(times) / len(times)
        results[mode] = (
            f"{args.batch / mean:.1f} "
            f"({mean:.2f} s/step, best {min(times):.2f}, "
            f"first call {first:.0f} s)"
        )
        print(f"{mode}: step times {[round(t, 2) for t in times]}", flush=True)

    command = "python " + " ".join(
        ["benchmarks/resnet_throughput.py"]
        + (sys.argv[1:] if argv is None else argv)
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (
        f"{nproc()} x {cpu_model()}, TF {tf.__version__}, "
        f"Keras {keras.__version__}, load avg {load:.1f} at end"
    )
    print(
        f"| `{command}` | {machine} | {args.batch} | {args.size} | "
        f"{results.get('graph', '-')} | {results.get('xla', '-')} |"
    )


if __name__ == "__main__":
    main()
