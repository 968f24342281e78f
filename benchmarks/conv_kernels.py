"""How fast TensorFlow's convolution kernels run on this machine, alone.

The SimCLRv2 step's time is mostly its encoder's convolutions (see
`vs_simclr_tf2.py --profile`). This times each kernel those convolutions
use, one at a time, at the shapes of the CIFAR ResNet-18 the comparison
with SimCLR TF2 trains: for every distinct convolution (input shape,
kernel shape, strides) over the 2·B views, its forward pass, the gradient
of its input and the gradient of its kernel, each in its own
`tf.function`, and a float32 matmul of `--matmul`³ as the machine's dense
peak. Rates are 2·H'·W'·k_h·k_w·C_in·C_out FLOPs per image (a multiply and
an add per weight per output position; the same count for each gradient)
over the median of `--repeats` timed calls after one untimed call.

The last lines add the kernels up as the step runs them
(`vs_simclr_tf2.convolution_flops`: every layer's forward and kernel
gradient, and its input gradient except the first layer's): the time the
step's convolutions take one after another at these rates, to set beside
the contender `convolutions` of `vs_simclr_tf2.py`, which runs them all in
one function.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/conv_kernels.py --batch 256 --width 1
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERNELS = ("forward", "input gradient", "kernel gradient")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--batch", type=int, default=256, help="images; 2·B views"
    )
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--size", type=int, default=32, help="view pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--matmul", type=int, default=4096, help="n of an n³ matmul; 0: none"
    )
    args = parser.parse_args(argv)
    if min(args.batch, args.width, args.repeats) < 1 or args.size < 8:
        raise ValueError(
            "`--batch`, `--width` and `--repeats` must be >= 1 and `--size` "
            f">= 8. Received: batch={args.batch}, width={args.width}, "
            f"repeats={args.repeats}, size={args.size}"
        )
    if args.matmul < 0:
        raise ValueError(f"`--matmul` must be >= 0. Received: {args.matmul}")
    return args


def _median_seconds(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        float(result)  # waits for the result
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def distinct_convolutions(encoder):
    """The encoder's `Conv2D` layers grouped by what their kernels compute.

    Returns:
        A list of `(layer, count, first)`: one layer of each distinct
        (input shape, kernel shape, strides, padding, dilation), how many
        layers share it, and whether it includes the encoder's first
        convolution (whose input gradient a training step never takes).
    """
    from vs_simclr_tf2 import _conv_layers

    groups = {}
    for i, layer in enumerate(_conv_layers(encoder)):
        key = (
            tuple(layer.input.shape[1:]),
            tuple(layer.kernel.shape),
            tuple(layer.strides),
            layer.padding,
            tuple(layer.dilation_rate),
        )
        if key not in groups:
            groups[key] = [layer, 0, False]
        groups[key][1] += 1
        groups[key][2] |= i == 0
    return [tuple(group) for group in groups.values()]


def kernel_functions(layer, batch):
    """`tf.function`s running one kernel each of `layer` over `batch`."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    x = rng.normal((batch, *layer.input.shape[1:]))
    dy = rng.normal((batch, *layer.output.shape[1:])) * 0.01
    kernel = tf.convert_to_tensor(layer.kernel)

    def gradient(of_input):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = layer.convolution_op(x, kernel)
            # Asking for one gradient leaves the other out of the graph.
            (g,) = tape.gradient(y, [x if of_input else kernel], dy)
            return g[(0,) * g.shape.rank]

        return run

    @tf.function
    def forward():
        return layer.convolution_op(x, kernel)[0, 0, 0, 0]

    return {
        "forward": forward,
        "input gradient": gradient(True),
        "kernel gradient": gradient(False),
    }


def matmul_rate(n, repeats):
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def run():
        return tf.matmul(a, b)[0, 0]

    return 2 * n**3 / _median_seconds(run, repeats) / 1e9


def measure(args):
    """Rows `(layer, count, first, {kernel: seconds})` and the matmul rate."""
    import tensorflow as tf

    from keras_ssl.backbones import ResNet

    # One function per kernel and shape, each traced once: not retracing.
    tf.get_logger().setLevel("ERROR")

    encoder = ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(args.size, args.size, 3),
    )
    batch = 2 * args.batch
    rows = []
    for layer, count, first in distinct_convolutions(encoder):
        functions = kernel_functions(layer, batch)
        seconds = {
            name: _median_seconds(functions[name], args.repeats)
            for name in KERNELS
        }
        rows.append((layer, count, first, seconds))
    peak = matmul_rate(args.matmul, args.repeats) if args.matmul else None
    return encoder, rows, peak


def report(args, encoder, rows, peak):
    from alternate import machine
    from vs_simclr_tf2 import convolution_flops
    from vs_simclr_tf2 import layer_flops

    batch = 2 * args.batch
    lines = [
        machine(),
        f"CIFAR ResNet-18 width {args.width}, {batch} views of "
        f"{args.size} px, float32; median of {args.repeats} calls each",
        "| input | kernel | stride | layers | GFLOP | "
        + " | ".join(f"{k} s (GFLOP/s)" for k in KERNELS)
        + " |",
        "| --- | --- | --- | ---: | ---: | "
        + " | ".join("---:" for _ in KERNELS)
        + " |",
    ]
    serial = 0.0
    for layer, count, first, seconds in rows:
        each = layer_flops(layer, batch)
        cells = [
            f"{seconds[k]:.3f} ({each / seconds[k] / 1e9:,.0f})"
            for k in KERNELS
        ]
        lines.append(
            f"| {'×'.join(map(str, layer.input.shape[1:]))} "
            f"| {'×'.join(map(str, layer.kernel.shape))} "
            f"| {layer.strides[0]} | {count} | {each / 1e9:.2f} | "
            + " | ".join(cells)
            + " |"
        )
        # The step: every layer's forward and kernel gradient, and the
        # input gradient of all but the first layer.
        serial += (
            count * (seconds["forward"] + seconds["kernel gradient"])
            + (count - first) * seconds["input gradient"]
        )
    flops = convolution_flops(encoder, batch)
    lines.append(
        f"The step's convolutions: {flops / 1e9:,.1f} GFLOP; one after "
        f"another at these rates {serial:.3f} s ({flops / serial / 1e9:,.1f} "
        "GFLOP/s)"
    )
    if peak:
        lines.append(f"float32 matmul {args.matmul}³: {peak:,.1f} GFLOP/s")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    text = report(args, *measure(args))
    print(text)
    return text


if __name__ == "__main__":
    main()
