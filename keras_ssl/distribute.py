"""The one module that knows about replicas.

Under a `tf.distribute` strategy with more than one replica these helpers
talk to the other replicas; everywhere else (no strategy, the default
strategy, the JAX backend where a `jit` over the global batch already sees
every example) they are the identity.
"""

import keras


def _tensorflow():
    """The `tensorflow` module, on the TensorFlow backend only."""
    # TensorFlow is an optional extra: the JAX backend runs without it.
    import tensorflow as tf

    return tf


def _replica_context():
    """The TensorFlow replica context when there is more than one replica."""
    if keras.backend.backend() != "tensorflow":
        return None
    tf = _tensorflow()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas() -> int:
    """Number of replicas taking part in the current step (1 outside)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_id():
    """Index of this replica in its sync group (0 outside a strategy)."""
    context = _replica_context()
    if context is None:
        return 0
    return context.replica_id_in_sync_group


def all_gather(x):
    """Concatenates `x` from every replica along axis 0, differentiably.

    Each replica writes its tensor into its own slot of a zero tensor of
    shape `(num_replicas, *x.shape)` and the slots are summed across
    replicas. The gradient of a sum all-reduce is a sum all-reduce, so the
    slice that flows back to each replica is the derivative of *every*
    replica's loss with respect to its own tensor: summing the replicas'
    weight gradients, as the optimizer does, then gives the gradient of the
    global loss (SimCLR's `cross_replica_concat`). This also compiles on
    TPUs, where an all-gather of unknown size does not.

    Args:
        x: tensor with a static shape.

    Returns:
        A tensor of shape `(num_replicas * x.shape[0], *x.shape[1:])`,
        replica 0's rows first. `x` itself outside a multi-replica context.
    """
    context = _replica_context()
    if context is None:
        return x
    tf = _tensorflow()
    x = tf.convert_to_tensor(x)
    slots = tf.scatter_nd(
        indices=[[context.replica_id_in_sync_group]],
        updates=x[None],
        shape=tf.concat([[context.num_replicas_in_sync], tf.shape(x)], 0),
    )
    slots = context.all_reduce(tf.distribute.ReduceOp.SUM, slots)
    return tf.reshape(slots, tf.concat([[-1], tf.shape(x)[1:]], 0))


def all_reduce_sum(x):
    """Sum of `x` over replicas (`x` itself outside)."""
    context = _replica_context()
    if context is None:
        return x
    tf = _tensorflow()
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def in_multi_worker_mode() -> bool:
    """Whether the current strategy spans more than one worker.

    True under a `tf.distribute.MultiWorkerMirroredStrategy` whose cluster
    has several workers (a chief counts as one), as Keras's own check
    (`_in_multi_worker_mode`) decides it, read from the strategy's public
    cluster resolver: an evaluator task, or a strategy without a cluster,
    is single-worker.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    tf = _tensorflow()
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type == "evaluator":
        return False
    jobs = resolver.cluster_spec().as_dict()
    return len(jobs.get("chief", [])) + len(jobs.get("worker", [])) > 1
