"""NumPy building blocks for the reference networks' forward passes.

Every op works on NHWC float64 arrays and spells out its padding, so that
each reference network can be written down as its own code defines it.
"""

import numpy as np


def images(batch=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, size, size, 3)).astype("float32")


def pad(x, top, bottom, left, right, value=0.0):
    return np.pad(
        x,
        ((0, 0), (top, bottom), (left, right), (0, 0)),
        constant_values=value,
    )


def same_padding(size, kernel, stride):
    """TensorFlow's (and Haiku's) "SAME": the extra pixel goes last."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv(x, w, stride=1, padding="same"):
    """Cross-correlation with an HWIO kernel.

    `padding`: "same" (TF's rule), "valid", or an int padded on every side.
    """
    k = w.shape[0]
    if padding == "same":
        top, bottom = same_padding(x.shape[1], k, stride)
        left, right = same_padding(x.shape[2], k, stride)
        x = pad(x, top, bottom, left, right)
    elif isinstance(padding, int):
        x = pad(x, padding, padding, padding, padding)
    batch, height, width, channels = x.shape
    out_h = (height - k) // stride + 1
    out_w = (width - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), (1, 2))
    windows = windows[:, ::stride, ::stride][:, :out_h, :out_w]
    # windows: (B, out_h, out_w, C, k, k)
    return np.einsum("bhwcij,ijco->bhwo", windows, w.astype("float64"))


def max_pool(x, size, stride, padding):
    """Max-pool; `padding`: "same" (TF) or an int (PyTorch, -inf pads)."""
    if padding == "same":
        top, bottom = same_padding(x.shape[1], size, stride)
        left, right = same_padding(x.shape[2], size, stride)
    else:
        top = bottom = left = right = padding
    x = pad(x, top, bottom, left, right, value=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), (1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-1, -2))


def avg_pool(x, size, stride, padding):
    """Average pool; "same" averages only the pixels inside the image."""
    if padding == "same":
        top, bottom = same_padding(x.shape[1], size, stride)
        left, right = same_padding(x.shape[2], size, stride)
    else:
        top = bottom = left = right = 0
    ones = pad(np.ones_like(x[..., :1]), top, bottom, left, right)
    x = pad(x, top, bottom, left, right)
    sums = np.lib.stride_tricks.sliding_window_view(x, (size, size), (1, 2))
    counts = np.lib.stride_tricks.sliding_window_view(
        ones, (size, size), (1, 2)
    )
    sums = sums[:, ::stride, ::stride].sum(axis=(-1, -2))
    counts = counts[:, ::stride, ::stride].sum(axis=(-1, -2))
    return sums / counts


def batch_norm(x, gamma, beta, mean, var, eps):
    gamma = 1.0 if gamma is None else gamma
    beta = 0.0 if beta is None else beta
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


class RandomParams:
    """Creates each parameter on first use, under the reference's name.

    A reference forward pass asks for its parameters as it goes; run once,
    it defines the checkpoint (`values`) that the test then writes.
    """

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.values = {}

    def get(self, name, shape, kind):
        if name not in self.values:
            self.values[name] = self._draw(shape, kind).astype("float32")
        return self.values[name].astype("float64")

    def _draw(self, shape, kind):
        rng = self.rng
        if kind == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            return rng.normal(size=shape) * np.sqrt(1.0 / fan_in)
        if kind == "torch_kernel":
            fan_in = int(np.prod(shape[1:]))
            return rng.normal(size=shape) * np.sqrt(1.0 / fan_in)
        if kind in ("gamma", "variance"):
            return rng.uniform(0.5, 1.5, size=shape)
        return rng.normal(scale=0.1, size=shape)  # beta, mean, bias
