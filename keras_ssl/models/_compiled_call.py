"""Augmentation layers compiled on their own, inside any training step."""

import weakref

import keras

from keras_ssl.layers.views import Views

# One compiled function per (layer, training); kept outside the layer so
# that saving and exporting never meet it.
_COMPILED = weakref.WeakKeyDictionary()


def compiled_call(layer, images, training=True):
    """`layer(images, training=training)`, XLA-compiled on its own.

    The on-device augmentation layers (`Views`, `RandomResizedCrop`) are
    many small element-wise and gather ops; XLA fuses them into a few
    loops, and uncompiled they run about 20x slower on a CPU. Keras does
    not XLA-compile `fit()`'s step on a CPU (and compiling the whole step
    is slower there), so the layer is compiled on its own: an inner
    `tf.function(jit_compile=True)` on TensorFlow, `jax.jit` of the
    layer's `stateless_call` on JAX. Both carry the layer's random state
    (its `SeedGenerator`s) through the call, so the views equal those of
    the layer compiled by itself from the same state. Inside a step that
    is compiled already, the inner functions are inlined.

    On TensorFlow, a `Views` layer runs as one compiled function per view,
    called from an uncompiled one. Each view has its own sub-layers and
    random streams, so the views are the same as the whole layer's; but
    one XLA launch keeps the CPU's cores busy only part of the time, and
    separate launches let the runtime run the views on its inter-op
    threads at the same time.

    Args:
        layer: a built `keras.layers.Layer` that creates no variables in
            `call`.
        images: float images, `(B, H, W, C)`.
        training: bool. Passed to the layer.

    Returns:
        What `layer(images, training=training)` returns.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_function(layer, bool(training))(images)
    if backend == "jax":
        return _jax_call(layer, images, bool(training))
    return layer(images, training=training)


def _cached(layer, training, make):
    functions = _COMPILED.setdefault(layer, {})
    if training not in functions:
        functions[training] = make()
    return functions[training]


def _tensorflow_function(layer, training):
    # Each backend is optional: its own path imports it.
    import tensorflow as tf

    def compiled(fn):
        return tf.function(
            fn, jit_compile=True, reduce_retracing=True, autograph=False
        )

    # The functions are cached by the layer, weakly: they must not keep
    # it alive.
    own = weakref.ref(layer)

    def make():
        if not isinstance(layer, Views) or len(layer.view_layers) < 2:
            return compiled(lambda x: own()(x, training=training))
        # One XLA launch per view: the views share no random state, so
        # they are the whole layer's, and the TF runtime runs the launches
        # on its inter-op threads at the same time.
        chains = [
            compiled(lambda x, i=i: own().apply_view(i, x, training))
            for i in range(len(layer.view_layers))
        ]

        def views(x):
            return own().arrange([chain(x) for chain in chains])

        return tf.function(views, reduce_retracing=True, autograph=False)

    return _cached(layer, training, make)


def _jax_call(layer, images, training):
    # Each backend is optional: its own path imports it.
    import jax

    own = weakref.ref(layer)  # Cached by the layer, weakly (see above).

    def make():
        def pure(trainable, non_trainable, x):
            return own().stateless_call(
                trainable, non_trainable, x, training=training
            )

        return jax.jit(pure)

    function = _cached(layer, training, make)
    # Inside the model's own `StatelessScope` (the JAX train step), `value`
    # reads the scope's state and `assign` writes to it.
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    outputs, non_trainable = function(trainable, non_trainable, images)
    for variable, value in zip(layer.non_trainable_variables, non_trainable):
        variable.assign(value)
    return outputs
