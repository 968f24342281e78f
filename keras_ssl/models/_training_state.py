"""The variables of a model's first training step, made before `fit`.

`tf.function` traces a function a second time when its first trace
created variables. Keras's `fit` creates the optimizer's slots (and a
compiled loss's and metrics' state) inside the first trace of the training
step, unless the model was made under a distribution strategy, so on
TensorFlow every model's first `fit` traced its whole training step twice:
about a third of a fine-tuning stage's first `fit` on a 2-core CPU
(docs/benchmarks.md, "The first fit's double trace"). Each model's `fit`
calls `build_training_state` first, and the step is traced once.

Keras 3.15.1 (keras/src/trainers/trainer.py) has no public API for this
state: `Trainer._symbolic_build` is what `fit` itself calls under a
distribution strategy, and `Layer._flatten_layers` tells whether every
layer is built. These are the module's only private uses;
tests/models/test_training_state.py (`TestKerasPrivateAPI`) fails if Keras
renames them.
"""

import keras

from keras_ssl.models._input_checks import is_tf_dataset


def build_training_state(model, data_batch=None):
    """Creates the variables `fit`'s first step would create: the
    optimizer's slots for the model's trainable variables and, with
    `data_batch`, the compiled loss's and metrics' state.

    Nothing happens off TensorFlow (JAX's `jit` has no second trace), in
    eager mode, without an optimizer, or while a layer is still unbuilt
    (its variables appear only in the first step; Keras then builds the
    optimizer there, as before).

    Args:
        model: a compiled `keras.Model`.
        data_batch: `(x, y, sample_weight)` with anything that has `shape`
            and `dtype` (`keras.KerasTensor`s), for a model compiled with
            a loss or metrics; `None` for a model that keeps its own
            metrics.
    """
    if (
        keras.backend.backend() != "tensorflow"
        or model.run_eagerly
        or getattr(model, "optimizer", None) is None
    ):
        return
    with model.distribute_strategy.scope():
        if data_batch is not None:
            # Builds the model, the compiled loss and metrics, then the
            # optimizer, from symbolic tensors of the batch's shapes.
            model._symbolic_build(data_batch=data_batch)
        elif not model.optimizer.built and all(
            layer.built for layer in model._flatten_layers()
        ):
            model.optimizer.build(model.trainable_variables)


def batch_spec(x, y=None, sample_weight=None):
    """`(x, y, sample_weight)` as shapes and dtypes for
    `build_training_state`, from what `fit` was given: arrays with their
    labels, a `keras.utils.PyDataset` (its first batch) or a
    `tf.data.Dataset` (its `element_spec`); `None` for anything else (a
    generator), which leaves the state to the first step."""

    def spec(value):
        if value is None:
            return None
        shape = (None,) + tuple(value.shape)[1:]
        return keras.KerasTensor(
            shape, keras.backend.standardize_dtype(value.dtype)
        )

    if isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif is_tf_dataset(x):
        batch = x.element_spec
    elif hasattr(x, "shape") and y is not None:
        batch = (x, y, sample_weight)
    else:
        return None
    if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 3:
        return None
    batch = tuple(batch) + (None,) * (3 - len(batch))
    if not all(v is None or hasattr(v, "shape") for v in batch):
        return None
    return tuple(spec(v) for v in batch)
