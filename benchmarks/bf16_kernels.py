"""Why emulated bfloat16 is slow on a CPU: one convolution, both kernels.

TensorFlow hands bfloat16 convolutions to oneDNN only on CPUs it finds
able to run them there (AVX512F or AVX-NE-CONVERT, its
`IsBF16SupportedByOneDNNOnThisCPU`); elsewhere, such as an AVX2-only CPU,
they fall back to TensorFlow's own Eigen kernels. `TF_ENABLE_ONEDNN_OPTS=0`
sends every convolution to those Eigen kernels, so on any CPU this script
shows what that fallback costs: it times one 3x3 convolution of the
SimCLRv2 step (forward, input and kernel gradients of a (B, 32, 32, 64)
batch with 64 output channels) in float32 and in bfloat16, once with
oneDNN (TensorFlow's default) and once with the Eigen kernels, each in a
fresh process. Rates are the convolution's FLOPs over the CPU time of the
fastest of `--repeats` calls (process time over all threads, which other
jobs on a shared machine disturb less than wall time).

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/bf16_kernels.py --batch 128
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SETTINGS = {"oneDNN": "1", "Eigen": "0"}
DTYPES = ("float32", "bfloat16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.repeats) < 1:
        raise ValueError(
            "`--batch` and `--repeats` must be >= 1. Received: "
            f"batch={args.batch}, repeats={args.repeats}"
        )
    return args


def flops(batch):
    """A 3x3, 64-to-64 convolution over (batch, 32, 32, 64), stride 1:
    2·H·W·9·64·64 per image for each of its three kernels."""
    return 3 * 2 * batch * 32 * 32 * 9 * 64 * 64


def time_convolution(dtype, batch, repeats):
    """(wall s, CPU s) of the fastest call of the three kernels."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    x = tf.cast(rng.normal((batch, 32, 32, 64)), dtype)
    kernel = tf.cast(rng.normal((3, 3, 64, 64)) * 0.05, dtype)
    dy = tf.cast(rng.normal((batch, 32, 32, 64)) * 0.01, dtype)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.conv2d(x, kernel, 1, "SAME")
        dx, dk = tape.gradient(y, [x, kernel], dy)
        return y[0, 0, 0, 0] + dx[0, 0, 0, 0] + dk[0, 0, 0, 0]

    float(step())
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        float(step())
        timing = (time.perf_counter() - wall, time.process_time() - cpu)
        best = timing if best is None or timing[1] < best[1] else best
    return best


def worker(args):
    results = {d: time_convolution(d, args.batch, args.repeats) for d in DTYPES}
    print(json.dumps(results))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from alternate import machine

    rows = {}
    for name, flag in SETTINGS.items():
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=flag)
        command = [sys.executable, os.path.abspath(__file__), "--worker"]
        command += ["--batch", str(args.batch), "--repeats", str(args.repeats)]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=True
        )
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(machine())
    print(
        f"3x3 convolution, 64 to 64 channels, ({args.batch}, 32, 32, 64): "
        f"forward, input and kernel gradients, {flops(args.batch) / 1e9:.1f} "
        f"GFLOP; fastest of {args.repeats} calls"
    )
    print("| kernels | dtype | wall s | CPU s | GFLOP/s (CPU time) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, results in rows.items():
        for dtype, (wall, cpu) in results.items():
            rate = flops(args.batch) / cpu / 1e9
            print(f"| {name} | {dtype} | {wall:.3f} | {cpu:.3f} | {rate:.1f} |")
    return rows


if __name__ == "__main__":
    main()
