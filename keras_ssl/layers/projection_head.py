"""The projection heads of SimCLRv2, PAWS and SemPPL, as one MLP."""

import keras

from keras_ssl._checks import check_positive_int
from keras_ssl.layers.fused_batch_normalization import batch_normalization


def _per_layer(name, value, num_layers):
    """A bool, or one bool per layer, as a tuple of `num_layers` bools."""
    if isinstance(value, bool):
        return (value,) * num_layers
    if isinstance(value, (list, tuple)) and len(value) == num_layers:
        if all(isinstance(v, bool) for v in value):
            return tuple(value)
    raise ValueError(
        f"`{name}` must be a bool or a list of {num_layers} bools, one per "
        f"layer. Received: {name}={value!r}"
    )


@keras.saving.register_keras_serializable(package="keras_ssl")
class ProjectionHead(keras.layers.Layer):
    """An MLP projection head, returning every layer's activation.

    Each of the `num_layers` layers is a `Dense`, optionally followed by
    BatchNorm, and, except for the last layer, a ReLU. Which layers have a
    bias and which a BatchNorm is data (`use_bias`, `batch_norm`), so one
    class builds the heads of the methods:

    - SimCLRv2 (the defaults): bias-free `Dense` and BatchNorm in every
      layer; the last BatchNorm has no centring (no beta), as in SimCLR.
    - PAWS: `use_bias=True, batch_norm=[True, True, False]` (suncet's
      `fc1, bn1, relu1, fc2, bn2, relu2, fc3`).
    - SemPPL / BYOL: `num_layers=2, use_bias=True,
      batch_norm=[True, False]` ("2 linear layers—the first one followed
      by batch normalization and rectified linear activation").

    The call returns a list of `num_layers + 1` tensors: entry `k` is the
    activation after `k` layers, so entry 0 is the head's input (the
    encoder output `h`) and entry `num_layers` is the projection `z`.
    Fine-tuning "from the first layer of the projection head" uses entry 1
    (`layers_of` gives the layers that make one entry from the previous).

    SimCLRv2 §2: "we set the width of projection head's middle layers to
    that of its input, so it is also adjusted by the width multiplier."
    This is the default when `hidden_dim` is `None`.

    Args:
        num_layers: int. Number of Dense layers. Defaults to `3`.
        output_dim: int. Width of the last layer (the projection). Defaults
            to `128`.
        hidden_dim: int or `None`. Width of the middle layers; `None` takes
            the input width. Defaults to `None`.
        bn_momentum: float. BatchNorm momentum. Defaults to `0.9`.
        bn_epsilon: float. BatchNorm epsilon. Defaults to `1e-5`.
        synchronized_bn: bool. Use cross-replica BatchNorm on the
            TensorFlow backend (ignored elsewhere, where a `jit` over the
            global batch already sees every example). Defaults to `False`.
        use_bias: bool or list of `num_layers` bools. Whether each `Dense`
            has a bias. Defaults to `False`.
        batch_norm: bool or list of `num_layers` bools. Whether each
            layer has a BatchNorm after its `Dense`. Defaults to `True`.
        kernel_initializer: optional initializer of the `Dense` kernels.
            Defaults to `None`, SimCLR's `RandomNormal(stddev=0.01)`.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:
    ```python
    head = keras_ssl.layers.ProjectionHead(num_layers=3, output_dim=128)
    activations = head(keras.random.normal((4, 2048)))
    z = activations[-1]  # (4, 128), the projection for NT-Xent
    h1 = activations[1]  # (4, 2048), where SimCLRv2 fine-tunes from
    ```

    References:
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
        - [Assran et al., 2021. Semi-Supervised Learning of Visual Features
          by Non-Parametrically Predicting View Assignments with Support
          Samples](https://arxiv.org/abs/2104.13963)
        - [Bošnjak et al., 2023. SemPPL: Predicting Pseudo-Labels for
          Better Contrastive Representations](https://arxiv.org/abs/2301.05158)
    """

    def __init__(
        self,
        num_layers=3,
        output_dim=128,
        hidden_dim=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        synchronized_bn=False,
        use_bias=False,
        batch_norm=True,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_layers", num_layers)
        check_positive_int("output_dim", output_dim)
        check_positive_int("hidden_dim", hidden_dim, optional=True)
        self.num_layers = num_layers
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.synchronized_bn = synchronized_bn
        self.use_bias = _per_layer("use_bias", use_bias, num_layers)
        self.batch_norm = _per_layer("batch_norm", batch_norm, num_layers)
        self.kernel_initializer = kernel_initializer
        self.dense_layers = []
        self.norm_layers = []
        self.activation_layers = []

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "`ProjectionHead` needs a known input width. Received: "
                f"input_shape={input_shape}"
            )
        hidden = self.hidden_dim or input_dim
        dim = input_dim
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            width = self.output_dim if last else hidden
            dense = keras.layers.Dense(
                width,
                use_bias=self.use_bias[i],
                kernel_initializer=self._kernel_initializer(),
                dtype=self.dtype_policy,
                name=f"dense_{i}",
            )
            dense.build((None, dim))
            self.dense_layers.append(dense)
            norm = None
            if self.batch_norm[i]:
                norm = batch_normalization(
                    self.synchronized_bn,
                    momentum=self.bn_momentum,
                    epsilon=self.bn_epsilon,
                    center=not last,
                    dtype=self.dtype_policy,
                    name=f"bn_{i}",
                )
                norm.build((None, width))
            self.norm_layers.append(norm)
            self.activation_layers.append(
                None
                if last
                else keras.layers.ReLU(
                    dtype=self.dtype_policy, name=f"relu_{i}"
                )
            )
            dim = width

    def _kernel_initializer(self):
        # A fresh initializer per layer: one instance holds one seed, and
        # would give layers of the same shape the same weights.
        if self.kernel_initializer is None:
            return keras.initializers.RandomNormal(stddev=0.01)
        initializer = keras.initializers.get(self.kernel_initializer)
        return initializer.__class__.from_config(initializer.get_config())

    def layers_of(self, index):
        """The layers of head layer `index` in call order: Dense,
        BatchNorm if it has one, ReLU unless it is the last layer."""
        layers = (
            self.dense_layers[index],
            self.norm_layers[index],
            self.activation_layers[index],
        )
        return [layer for layer in layers if layer is not None]

    @property
    def layers(self):
        """Every layer of the head in call order (as `Sequential.layers`)."""
        return [
            layer
            for i in range(len(self.dense_layers))
            for layer in self.layers_of(i)
        ]

    def call(self, inputs, training=None):
        activations = [inputs]
        x = inputs
        for i in range(self.num_layers):
            for layer in self.layers_of(i):
                x = layer(x, training=training)
            activations.append(x)
        return activations

    def compute_output_shape(self, input_shape):
        hidden = self.hidden_dim or input_shape[-1]
        shapes = [tuple(input_shape)]
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            width = self.output_dim if last else hidden
            shapes.append(tuple(input_shape[:-1]) + (width,))
        return shapes

    def get_config(self):
        config = super().get_config()
        initializer = self.kernel_initializer
        if initializer is not None:
            initializer = keras.initializers.serialize(
                keras.initializers.get(initializer)
            )
        config.update(
            {
                "num_layers": self.num_layers,
                "output_dim": self.output_dim,
                "hidden_dim": self.hidden_dim,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "synchronized_bn": self.synchronized_bn,
                "use_bias": list(self.use_bias),
                "batch_norm": list(self.batch_norm),
                "kernel_initializer": initializer,
            }
        )
        return config
