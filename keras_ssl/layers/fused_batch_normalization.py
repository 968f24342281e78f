"""BatchNormalization whose training step is one fused kernel on TensorFlow."""

import keras


@keras.saving.register_keras_serializable(package="keras_ssl")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel.

    Keras 3 normalises a batch with separate ops: a mean, a squared
    difference, another mean, then the affine arithmetic, and as many
    again in the gradient. On TensorFlow, in training mode, this layer
    computes the moments, the normalisation and (through TensorFlow's
    registered gradient) their gradient in `FusedBatchNormV3` and its
    gradient kernel instead. The math is the same as Keras's layer:
    outputs use the batch's biased variance, the moving statistics are
    updated with `momentum` from the batch mean and the biased variance
    (the kernel reports the unbiased one, which is rescaled by
    `(n - 1) / n`), and low-precision inputs are normalised with float32
    statistics.

    Everything else is Keras's layer unchanged: inference, other
    backends, float64 inputs, `synchronized=True` (the cross-replica
    moments come first, and a fused kernel that takes given moments would
    not pass their gradient), `renorm`, masks, and a normalised axis
    other than the last of a 2-D to 4-D input.

    Args:
        **kwargs: the `keras.layers.BatchNormalization` arguments.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and fusable(self, inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = fused_batch_statistics(self, inputs)
        momentum = self.momentum
        self.moving_mean.assign(
            self.moving_mean * momentum + mean * (1.0 - momentum)
        )
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum)
        )
        return outputs


def batch_normalization(synchronized=False, **kwargs):
    """A BatchNormalization layer, synchronized where it can be.

    The layer is a `FusedBatchNormalization`: Keras's layer, whose
    unsynchronized training step runs in one fused kernel on TensorFlow.

    `synchronized=True` computes the statistics over every replica's batch
    on the TensorFlow backend. Keras raises for it on other backends, where
    it is not needed: under JAX a `jit` over the global batch already
    gives global statistics. So it is passed on only on TensorFlow.

    Args:
        synchronized: bool. Whether the statistics should be global.
            Defaults to `False`.
        **kwargs: the other `BatchNormalization` arguments.

    Returns:
        The layer.
    """
    synchronized = bool(synchronized) and keras.backend.backend() == (
        "tensorflow"
    )
    return FusedBatchNormalization(synchronized=synchronized, **kwargs)


def fusable(layer, inputs, mask=None):
    """Whether `fused_batch_statistics` can normalise `inputs` for `layer`.

    True on TensorFlow for a `FusedBatchNormalization` that is not
    synchronized and has no renorm, without a mask, normalising the last
    axis of a 2-D to 4-D input of known channels in float16, bfloat16 or
    float32 (the kernel has no float64: such inputs take Keras's ops).
    """
    rank = len(inputs.shape)
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return (
        keras.backend.backend() == "tensorflow"
        and dtype in ("float16", "bfloat16", "float32")
        and isinstance(layer, FusedBatchNormalization)
        and not layer.synchronized
        and not layer.renorm
        and mask is None
        and 2 <= rank <= 4
        and layer.axis in (-1, rank - 1)
        and inputs.shape[-1] is not None
    )


def fused_batch_statistics(layer, inputs):
    """Normalises `inputs` by their own moments in one fused kernel.

    Args:
        layer: a `FusedBatchNormalization` for which `fusable` holds.
        inputs: the batch.

    Returns:
        `(outputs, mean, variance)`: the outputs in the layer's compute
        dtype, and the batch's float32 mean and biased variance.
    """
    # TensorFlow is an optional extra; `fusable` holds on it alone.
    import tensorflow as tf

    x = tf.convert_to_tensor(inputs)
    if x.dtype not in (tf.float16, tf.bfloat16, tf.float32):
        x = tf.cast(x, tf.float32)
    channels = x.shape[-1]
    shape = tf.shape(x)
    if len(x.shape) != 4:
        # The kernel takes NHWC: a (B, C) or (B, L, C) batch is
        # (B, 1, 1, C) or (B, 1, L, C), with the same moments.
        x = tf.reshape(x, [shape[0], 1, -1, channels])
    ones = tf.ones([channels], tf.float32)
    gamma = tf.cast(layer.gamma, tf.float32) if layer.scale else ones
    beta = tf.cast(layer.beta, tf.float32) if layer.center else 0.0 * ones
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=gamma,
        offset=beta,
        mean=tf.zeros([0], tf.float32),
        variance=tf.zeros([0], tf.float32),
        epsilon=layer.epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel reports the unbiased variance; Keras averages the biased.
    count = tf.cast(tf.size(x) // channels, tf.float32)
    variance = variance * tf.maximum(count - 1.0, 0.0) / count
    return tf.cast(tf.reshape(y, shape), layer.compute_dtype), mean, variance
