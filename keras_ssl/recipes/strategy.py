"""The run's `tf.distribute.Strategy`: the one a config names, checked
against the recipe's batch sizes."""

import os


def make_strategy(name):
    """The `tf.distribute.Strategy` a config's `strategy` names, or `None`
    for `"default"`."""
    if name == "default":
        return None
    import tensorflow as tf  # Loaded only for a strategy that needs it.

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=os.environ.get("TPU_NAME", "")
    )
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def resolve_strategy(strategy, global_batch_sizes):
    """The strategy to use and a check that each batch splits evenly.

    Args:
        strategy: a `tf.distribute.Strategy` or `None` for the default.
        global_batch_sizes: dict of argument name to global batch size.

    Returns:
        The strategy.
    """
    import keras  # Loaded when the run starts, not with the command line.

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "The keras_ssl.recipes pipelines run on the TensorFlow backend "
            "(tf.distribute strategies, resumable tf.data streams, "
            "TensorBoard logs, SavedModel export). Received: "
            f"backend={backend}. On {backend}, train the models of "
            "keras_ssl.models with fit() on keras_ssl.data streams "
            "(README, 'Backends')."
        )
    # TensorFlow: loaded when the run starts.
    import tensorflow as tf

    if strategy is None:
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(
            "`strategy` must be a tf.distribute.Strategy or None. Received: "
            f"strategy={strategy!r}"
        )
    replicas = strategy.num_replicas_in_sync
    for name, size in global_batch_sizes.items():
        if size % replicas:
            raise ValueError(
                f"`{name}` must be divisible by the number of replicas "
                f"({replicas}). Received: {name}={size}"
            )
    return strategy
