"""`SSLModel`: the training-step skeleton shared by every method."""

import keras

from keras_ssl import distribute
from keras_ssl.models._input_checks import check_fit_input
from keras_ssl.models._recompile_on_load import RecompileOnLoad
from keras_ssl.models._training_state import build_training_state


class SavesRandomState:
    """A model mixin that saves its random generators' states with its
    weights.

    Keras leaves `SeedGenerator` states out of saved weights. They are
    saved here, so that a run resumed from a checkpoint draws the same
    augmentations (views, crops, sampled supports) as one that was never
    interrupted. A file saved without them loads as before.
    """

    _RANDOM_STATE = "random_state_"

    def _random_states(self):
        return [
            v for v in self.variables if v.path.endswith("seed_generator_state")
        ]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, state in enumerate(self._random_states()):
            store[f"{self._RANDOM_STATE}{i}"] = state

    def load_own_variables(self, store):
        keys = list(store.keys())
        own = {
            k: store[k] for k in keys if not k.startswith(self._RANDOM_STATE)
        }
        super().load_own_variables(own)
        for i, state in enumerate(self._random_states()):
            key = f"{self._RANDOM_STATE}{i}"
            if key in keys:
                state.assign(store[key])


class ConfigFromArguments:
    """A model mixin: `get_config` and `from_config` from argument names.

    A subclass lists its constructor's arguments, each stored under its
    own name: `config_objects` holds the Keras objects (networks, layers;
    `None` where optional), serialized in the config and rebuilt on load,
    and `config_values` the plain ones.
    """

    config_objects = ()
    config_values = ()

    def get_config(self):
        config = super().get_config()
        for name in self.config_objects:
            config[name] = keras.saving.serialize_keras_object(
                getattr(self, name)
            )
        config.update(
            {name: getattr(self, name) for name in self.config_values}
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls.config_objects:
            if config.get(name) is not None:
                config[name] = keras.saving.deserialize_keras_object(
                    config[name]
                )
        return cls(**config)


class SSLModel(
    SavesRandomState, RecompileOnLoad, ConfigFromArguments, keras.Model
):
    """Base class: the method's math in one place, the step around it.

    A subclass implements `compute_ssl_loss(data, training)`, which returns
    the scalar loss of this replica's examples and a dict of values for the
    metric trackers named in `metric_names`, all written on `keras.ops`.
    The `loss` tracker reports the returned loss unless the dict holds a
    `"loss"` of its own (a method whose gradient also trains a monitor,
    such as an online probe, reports its own objective there).
    State the method updates (momentum encoders, queues, BN statistics) is
    assigned inside `compute_ssl_loss`; momentum encoders are updated at
    the start of the next forward pass, as in MoCo, so nothing has to run
    after the optimizer step. It names its constructor's arguments in
    `config_objects` and `config_values` (`ConfigFromArguments`), from
    which its config is written and read.

    `train_step` only takes gradients, applies them and updates the
    trackers, with one variant per backend around the same
    `compute_ssl_loss`:

    - TensorFlow: a `GradientTape`. Under `tf.distribute` the optimizer
      sums the replicas' gradients, so the loss is divided by the number
      of replicas first and the sum is the gradient of the global mean.
    - JAX: `jax.value_and_grad` of `compute_ssl_loss` run inside a
      `keras.StatelessScope`, which collects every variable assignment as
      new state. Under `keras.distribution.DataParallel` the jitted step
      sees the global batch as one sharded array, so the loss is already
      the global mean, batch statistics are global (synchronized BN for
      free) and the `keras_ssl.distribute` helpers are the identity.
    """

    metric_names = ("loss",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in self.metric_names
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compute_ssl_loss(self, data, training=True):
        raise NotImplementedError

    def serving_outputs(self, images):
        """What an export serves for float images in [0, 1] at the model's
        `image_size`: the dict `call` returns (`embedding`, ...)."""
        outputs = self(images, training=False)
        return outputs if isinstance(outputs, dict) else {"embedding": outputs}

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`, after checking the images in `x`.

        Images must be uint8 in [0, 255] or float in [0, 1], RGB, channels
        last; anything else raises a `ValueError` before the first step
        (arrays are checked in full, streams on their first batch).
        """
        x = check_fit_input(x, model=type(self).__name__)
        build_training_state(self)
        return super().fit(x, *args, **kwargs)

    def train_step(self, *args):
        # Keras calls `train_step(data)` on TensorFlow and the stateless
        # `train_step(state, data)` on JAX. Both run the same
        # `compute_ssl_loss`: only the differentiation differs.
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tensorflow_train_step(*args)
        if backend == "jax":
            return self._jax_train_step(*args)
        raise NotImplementedError(
            f"{type(self).__name__}.train_step supports the TensorFlow and "
            f"JAX backends. Received: backend={backend}"
        )

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        (data,) = args
        loss, logs = self.compute_ssl_loss(data, training=False)
        return self.update_trackers({"loss": loss, **logs})

    def _tensorflow_train_step(self, data):
        # Each backend is optional: its own step imports it.
        import tensorflow as tf

        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, logs = self.compute_ssl_loss(data, training=True)
            scaled = loss / distribute.num_replicas()
            scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self.update_trackers({"loss": loss, **logs})

    def _stateless_ssl_loss(
        self, trainable, non_trainable, data, training, optimizer_variables
    ):
        """`compute_ssl_loss` as a pure function of the variables' values.

        Every assignment the method makes (BN moving statistics, momentum
        weights, queues, seed generators) is caught by a `StatelessScope`
        and returned as the new non-trainable values.
        """
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        if optimizer_variables is not None:
            # The loss may read the optimizer's current step and rate.
            mapping += list(zip(self.optimizer.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, logs = self.compute_ssl_loss(data, training=training)
        new_non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        scaled = loss
        if training and optimizer_variables is not None:
            mapping = list(zip(self.optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                scaled = self.optimizer.scale_loss(loss)
        return scaled, (loss, logs, new_non_trainable)

    def _jax_train_step(self, state, data):
        # Each backend is optional: its own step imports it.
        import jax

        trainable, non_trainable, optimizer_variables, metrics = state
        grad_fn = jax.value_and_grad(self._stateless_ssl_loss, has_aux=True)
        (_, (loss, logs, non_trainable)), grads = grad_fn(
            trainable, non_trainable, data, True, optimizer_variables
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        results, metrics = self._stateless_update_trackers(
            metrics, {"loss": loss, **logs}
        )
        return results, (trainable, non_trainable, optimizer_variables, metrics)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics = state
        _, (loss, logs, non_trainable) = self._stateless_ssl_loss(
            trainable, non_trainable, data, False, None
        )
        results, metrics = self._stateless_update_trackers(
            metrics, {"loss": loss, **logs}
        )
        return results, (trainable, non_trainable, metrics)

    def _stateless_update_trackers(self, metrics_values, logs):
        mapping = list(zip(self.metrics_variables, metrics_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            results = self.update_trackers(logs)
        new_values = [
            scope.get_current_value(v) for v in self.metrics_variables
        ]
        return results, new_values

    def update_trackers(self, logs):
        """Updates the trackers named in `logs`; returns their results.

        Only metrics the step computed are returned: a metric it cannot
        compute for this data (the probe without labels, pseudo-label
        accuracy without held-out labels) is left out of the logs rather
        than reported as 0. Which keys a step returns is fixed when it is
        traced.

        A value may be a `(value, weight)` pair: the tracker then pools the
        ratio `value` over batches and replicas with weight `weight` (its
        count), instead of averaging per-batch ratios.
        """
        results = {}
        for name, value in logs.items():
            if name not in self.trackers or value is None:
                continue
            weight = None
            if isinstance(value, tuple):
                value, weight = value
            self.trackers[name].update_state(value, sample_weight=weight)
            results[name] = self.trackers[name].result()
        if distribute.in_multi_worker_mode():
            # Keras reduces the logs of a multi-worker step with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs an axis.
            results = {
                k: keras.ops.reshape(v, (1,)) for k, v in results.items()
            }
        return results
