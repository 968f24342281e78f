"""Momentum (EMA) copies of networks, for MoCo memories and EMA targets."""

import keras


def clone_network(network):
    """A structurally identical, frozen copy of `network` with its weights.

    The copy is non-trainable, so its BatchNorm layers run in inference
    mode with their (EMA) moving statistics, and its variables are never
    handed to the optimizer.
    """
    copy = keras.models.clone_model(network)
    copy.set_weights(network.get_weights())
    copy.trainable = False
    return copy


def clone_layer(layer, input_shape):
    """Like `clone_network` for a layer that is not a model."""
    copy = layer.__class__.from_config(layer.get_config())
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    copy.trainable = False
    return copy


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
