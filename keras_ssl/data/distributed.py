"""`distribute_dataset()`: per-replica input for a `tf.distribute` strategy."""

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import is_tf_dataset
from keras_ssl.data._host_dataset import HostDataset
from keras_ssl.data._host_dataset import check_divisible


def _check_global_batch(global_batch_size, num_replicas):
    global_batch_size = check_positive_int(
        "global_batch_size", global_batch_size
    )
    if global_batch_size % num_replicas:
        raise ValueError(
            "`global_batch_size` must be divisible by the number of replicas "
            f"({num_replicas}). Received: global_batch_size="
            f"{global_batch_size}, num_replicas={num_replicas}"
        )
    return global_batch_size


def distribute_dataset(strategy, dataset, global_batch_size=None):
    """Builds per-replica input with `distribute_datasets_from_function`.

    Each input pipeline (one per worker) builds its own dataset from its
    `tf.distribute.InputContext` and hands its replicas consecutive
    per-replica batches. Three inputs:

    - a host pipeline (`ArrayDataset`, `SemiSupervisedDataset`,
      `SupportSampler`): every pipeline draws the same global batches
      (same seed) and yields its own replicas' pieces
      (`to_tf_dataset(input_context)`), so N replicas see exactly the
      batches of one replica, on one worker or many. Each of its batch
      sizes must divide by the number of replicas.
    - an unbatched `tf.data.Dataset` with `global_batch_size`: sharded with
      `dataset.shard(num_input_pipelines, input_pipeline_id)` and batched
      with `input_context.get_per_replica_batch_size(global_batch_size)`
      (short last batch dropped). Shard before shuffling: give a dataset
      whose order is the same on every worker.
    - a function `dataset_fn(input_context) -> tf.data.Dataset` of
      per-replica batches, passed through (with `global_batch_size`, only
      checked).

    `fit()` also takes a plain `tf.data.Dataset` of global batches under a
    strategy (Keras splits each batch); this helper is for multi-worker
    input and for exact control over what each replica gets.

    Args:
        strategy: a `tf.distribute.Strategy`.
        dataset: a host pipeline, an unbatched `tf.data.Dataset`, or a
            `dataset_fn`.
        global_batch_size: int. Batch size summed over replicas; it must
            divide by `strategy.num_replicas_in_sync`. Required for an
            unbatched `tf.data.Dataset`.

    Returns:
        A `tf.distribute.DistributedDataset` (give it to `fit()` under
        `strategy.scope()`, or iterate it in a custom loop).

    Example:

    ```python
    strategy = tf.distribute.MirroredStrategy()
    stream = keras_ssl.data.semi_supervised(
        x, (x_l, y_l), unlabeled_batch_size=512, labeled_batch_size=128)
    distributed = keras_ssl.data.distribute_dataset(strategy, stream)
    ```
    """
    # Deferred: TensorFlow is optional for keras_ssl.data.
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if global_batch_size is not None:
        global_batch_size = _check_global_batch(global_batch_size, replicas)
    if isinstance(dataset, HostDataset):
        # Fail here, before any worker starts, rather than inside one.
        check_divisible(dataset.batch_sizes(), replicas)

        def dataset_fn(input_context):
            return dataset.to_tf_dataset(input_context=input_context)

    elif is_tf_dataset(dataset):
        if global_batch_size is None:
            raise ValueError(
                "`global_batch_size` is required to batch an unbatched "
                "tf.data.Dataset. Received: global_batch_size=None"
            )

        def dataset_fn(input_context):
            shard = dataset.shard(
                input_context.num_input_pipelines,
                input_context.input_pipeline_id,
            )
            size = input_context.get_per_replica_batch_size(global_batch_size)
            batched = shard.batch(size, drop_remainder=True)
            return batched.prefetch(tf.data.AUTOTUNE)

    elif callable(dataset):
        dataset_fn = dataset
    else:
        raise ValueError(
            "`dataset` must be a keras_ssl host pipeline, a tf.data.Dataset "
            "or a function of a tf.distribute.InputContext. Received: "
            f"dataset of type {type(dataset)}"
        )
    return strategy.distribute_datasets_from_function(dataset_fn)
