"""`SSLModel`: the training-step skeleton shared by every method."""

import keras

from keras_ssl import distribute


class SSLModel(keras.Model):
    """Base class: the method's math in one place, the step around it.

    A subclass implements `compute_ssl_loss(data, training)`, which returns
    the scalar loss of this replica's examples and a dict of values for the
    metric trackers named in `metric_names`, all written on `keras.ops`.
    It may implement `after_step()` for updates that must follow the
    optimizer step (none of the current methods need it: momentum encoders
    are updated at the start of the next forward pass, as in MoCo).

    `train_step` only takes gradients, applies them and updates the
    trackers. Under `tf.distribute` the optimizer sums the replicas'
    gradients, so the loss is divided by the number of replicas first and
    the sum is the gradient of the global mean.
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

    def after_step(self):
        pass

    def train_step(self, data):
        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise NotImplementedError(
                f"{type(self).__name__}.train_step supports the TensorFlow "
                f"backend. Received: backend={backend}"
            )
        import tensorflow as tf

        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, logs = self.compute_ssl_loss(data, training=True)
            scaled = loss / distribute.num_replicas()
            scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        self.after_step()
        return self.update_trackers(dict(logs, loss=loss))

    def test_step(self, data):
        loss, logs = self.compute_ssl_loss(data, training=False)
        return self.update_trackers(dict(logs, loss=loss))

    # Keras leaves `SeedGenerator` states out of saved weights. They are
    # saved here so that a run resumed from a checkpoint draws the same
    # augmentations as one that was never interrupted.
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

    def update_trackers(self, logs):
        for name, value in logs.items():
            if name in self.trackers and value is not None:
                self.trackers[name].update_state(value)
        results = {name: t.result() for name, t in self.trackers.items()}
        if _multi_worker():
            # Keras reduces the logs of a multi-worker step with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs an axis.
            results = {
                k: keras.ops.reshape(v, (1,)) for k, v in results.items()
            }
        return results


def _multi_worker():
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return strategy.extended._in_multi_worker_mode()
