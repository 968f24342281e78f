"""SimCLRv2's deep projection head."""

import keras


@keras.saving.register_keras_serializable(package="keras_ssl")
class ProjectionHead(keras.layers.Layer):
    """SimCLRv2's MLP projection head, returning every layer's activation.

    Each of the `num_layers` layers is a bias-free `Dense` followed by
    BatchNorm and, except for the last layer, a ReLU; the last BatchNorm has
    no centring (no beta), as in SimCLR. The call returns a list of
    `num_layers + 1` tensors: entry `k` is the activation after `k` layers,
    so entry 0 is the head's input (the encoder output `h`) and entry
    `num_layers` is the projection `z`. Fine-tuning "from the first layer of
    the projection head" uses entry 1.

    SimCLRv2 §2: "we set the width of projection head's middle layers to
    that of its input, so it is also adjusted by the width multiplier."
    This is the default when `hidden_dim` is `None`.

    Args:
        num_layers: int. Number of Dense+BN layers. Defaults to `3`.
        output_dim: int. Width of the last layer (the projection). Defaults
            to `128`.
        hidden_dim: int or `None`. Width of the middle layers; `None` takes
            the input width. Defaults to `None`.
        bn_momentum: float. BatchNorm momentum. Defaults to `0.9`.
        bn_epsilon: float. BatchNorm epsilon. Defaults to `1e-5`.
        synchronized_bn: bool. Use cross-replica BatchNorm on the
            TensorFlow backend (ignored elsewhere, where a `jit` over the
            global batch already sees every example). Defaults to `False`.
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
    """

    def __init__(
        self,
        num_layers=3,
        output_dim=128,
        hidden_dim=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        synchronized_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"`num_layers` must be an int >= 1. Received: "
                f"num_layers={num_layers}"
            )
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(
                f"`output_dim` must be an int >= 1. Received: "
                f"output_dim={output_dim}"
            )
        if hidden_dim is not None and (
            not isinstance(hidden_dim, int) or hidden_dim < 1
        ):
            raise ValueError(
                f"`hidden_dim` must be None or an int >= 1. Received: "
                f"hidden_dim={hidden_dim}"
            )
        self.num_layers = num_layers
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.synchronized_bn = synchronized_bn
        self.dense_layers = []
        self.norm_layers = []

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "`ProjectionHead` needs a known input width. Received: "
                f"input_shape={input_shape}"
            )
        hidden = self.hidden_dim or input_dim
        synchronized = (
            self.synchronized_bn and keras.backend.backend() == "tensorflow"
        )
        dim = input_dim
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            width = self.output_dim if last else hidden
            dense = keras.layers.Dense(
                width,
                use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                name=f"dense_{i}",
            )
            norm = keras.layers.BatchNormalization(
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                center=not last,
                synchronized=synchronized,
                name=f"bn_{i}",
            )
            dense.build((None, dim))
            norm.build((None, width))
            self.dense_layers.append(dense)
            self.norm_layers.append(norm)
            dim = width

    def call(self, inputs, training=None):
        activations = [inputs]
        x = inputs
        for i, (dense, norm) in enumerate(
            zip(self.dense_layers, self.norm_layers)
        ):
            x = norm(dense(x), training=training)
            if i < self.num_layers - 1:
                x = keras.ops.relu(x)
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
        config.update(
            {
                "num_layers": self.num_layers,
                "output_dim": self.output_dim,
                "hidden_dim": self.hidden_dim,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "synchronized_bn": self.synchronized_bn,
            }
        )
        return config
