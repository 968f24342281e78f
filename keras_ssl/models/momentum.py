"""Momentum (EMA) copies of networks, for MoCo memories and EMA targets."""

import functools

import keras
from keras import ops


def clone_network(network, batch_statistics=False):
    """A structurally identical, frozen copy of `network` with its weights.

    The copy is non-trainable: its variables are never handed to the
    optimizer. Keras runs a non-trainable BatchNorm layer in inference
    mode whatever `training` says, so by default the copy normalises with
    its (EMA'd) moving statistics.

    Args:
        network: the `keras.Model` to copy.
        batch_statistics: bool. Whether the copy's BatchNorm layers
            normalise with the statistics of the batch when called with
            `training=True` (synchronized across replicas where the
            original is), as BYOL's and RELICv2's target networks do. Their
            moving statistics are then never written by the call: they stay
            the EMA of the online network's. Defaults to `False`.

    Returns:
        The copy.
    """
    copy = keras.models.clone_model(network)
    copy.set_weights(network.get_weights())
    return _freeze(copy, batch_statistics)


def clone_layer(layer, input_shape, batch_statistics=False):
    """Like `clone_network` for a layer that is not a model."""
    copy = layer.__class__.from_config(layer.get_config())
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return _freeze(copy, batch_statistics)


def _freeze(copy, batch_statistics):
    copy.trainable = False
    if batch_statistics:
        for layer in copy._flatten_layers(include_self=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                if layer.renorm:
                    raise ValueError(
                        "A momentum copy on batch statistics does not "
                        "support BatchNormalization(renorm=True). Received: "
                        f"layer {layer.name!r} with renorm=True"
                    )
                # The copy's own layer objects take the behaviour: its
                # weights, paths and structure stay those of the original.
                layer.__class__ = _on_batch_statistics(type(layer))
    return copy


class _BatchStatistics:
    """Mixin: normalise by the batch when training, even when frozen.

    `keras.layers.BatchNormalization.call` uses batch statistics only when
    the layer is trainable; a momentum copy is frozen (its variables must
    not reach the optimizer) but, as a BYOL target, still normalises each
    batch by its own statistics. Moving statistics are not updated.
    """

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        # `_moments` is BatchNormalization's own (masks, synchronization).
        mean, variance = self._moments(inputs, mask)
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, compute_dtype) if self.center else None,
            scale=ops.cast(self.gamma, compute_dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


@functools.cache
def _on_batch_statistics(cls):
    return type(f"{cls.__name__}OnBatchStatistics", (_BatchStatistics, cls), {})


def ema_update(target_weights, online_weights, decay):
    """`target ← decay·target + (1 − decay)·online`, weight by weight.

    Moving BatchNorm statistics are averaged like the other weights. Under
    `tf.distribute` every replica holds identical online weights and
    computes the same new value, so each replica writes its own copy.
    """
    for target, online in zip(target_weights, online_weights):
        target.assign(
            decay * target
            + (1.0 - decay) * keras.ops.cast(online, target.dtype)
        )
