"""Momentum (EMA) copies of networks, for MoCo memories and EMA targets."""

import functools

import keras
from keras import ops

from keras_ssl.layers.fused_batch_normalization import fusable
from keras_ssl.layers.fused_batch_normalization import fused_batch_statistics


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
        for layer in all_layers(copy):
            if isinstance(layer, keras.layers.BatchNormalization):
                if layer.renorm:
                    raise ValueError(
                        "A momentum copy on batch statistics does not "
                        "support BatchNormalization(renorm=True). Received: "
                        f"layer {layer.name!r} with renorm=True"
                    )
                # The copy's own layer objects take the behaviour: its
                # weights, paths and structure stay those of the original.
                # (Keras internals: see `CHECKED_KERAS_VERSIONS`.)
                layer.__class__ = _on_batch_statistics(type(layer))
    return copy


# This module holds the library's two uses of Keras internals, checked on
# Keras 3.15.1; tests/models/test_momentum.py fails on a Keras version
# outside this list, or when either use stops working:
# - `all_layers` calls the private `Layer._flatten_layers`: Keras 3.15 has
#   no public recursive listing (`Model.layers` stops at the top level and
#   misses the sublayers of custom layers).
# - `_freeze` gives a copy's BatchNormalization layers a subclass by
#   assigning `layer.__class__`: `clone_model`'s public `clone_function`
#   reaches only a functional model's top-level layers, not those nested
#   in custom layers; `_BatchStatistics.call` reads BatchNormalization's
#   attributes (`axis`, `synchronized`, `gamma`, `beta`, ...).
CHECKED_KERAS_VERSIONS = ((3, 15),)


def all_layers(layer):
    """`layer` and every layer nested in it, however deep, `layer` first.

    The projection head's Dense and BatchNormalization layers included,
    which `Model.layers` leaves out (see `CHECKED_KERAS_VERSIONS`).
    """
    return list(layer._flatten_layers(include_self=True))


class _BatchStatistics:
    """Mixin: normalise by the batch when training, even when frozen.

    `keras.layers.BatchNormalization.call` uses batch statistics only when
    the layer is trainable; a momentum copy is frozen (its variables must
    not reach the optimizer) but, as a BYOL target or MoCo key encoder,
    still normalises each batch by its own statistics (synchronized across
    replicas where the layer is). Moving statistics are not updated.
    """

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        if mask is not None:
            raise ValueError(
                "A momentum copy on batch statistics does not take masks. "
                f"Received: a mask for layer {self.name!r}"
            )
        if fusable(self, inputs):
            return fused_batch_statistics(self, inputs)[0]
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        axis = self.axis % len(inputs.shape)
        mean, variance = ops.moments(
            inputs,
            axes=[i for i in range(len(inputs.shape)) if i != axis],
            synchronized=self.synchronized,
        )
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
