import copy
import os
import re
import tempfile

import keras
import numpy as np
import pytest

from keras_ssl.optimizers import LARS
from keras_ssl.optimizers import WarmupCosineDecay
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess

# path -> (shape, initial values); the scope before "/" is the layer.
VARIABLES = {
    "encoder/kernel": (3, 4),  # rank 2: decayed and adapted by default
    "encoder/bias": (4,),  # rank 1: excluded by rank
    "bn/gamma": (4,),  # rank 1: excluded by rank
    "conv/kernel": (3, 3, 2, 4),  # rank 4: decayed and adapted by default
    "head_supervised/kernel": (4, 3),  # excluded by path pattern
    "zero_init/kernel": (2, 3),  # ||w|| = 0 on the first step
    "frozen/kernel": (2, 2),  # its gradient is always zero
}


def _initial_values(rng):
    values = {}
    for path, shape in VARIABLES.items():
        values[path] = rng.normal(size=shape)
    values["bn/gamma"] = 1.0 + 0.1 * values["bn/gamma"]
    values["zero_init/kernel"] = np.zeros(VARIABLES["zero_init/kernel"])
    return values


def _gradients(rng, num_steps):
    steps = []
    for _ in range(num_steps):
        grads = {p: rng.normal(size=s) for p, s in VARIABLES.items()}
        grads["frozen/kernel"] = np.zeros(VARIABLES["frozen/kernel"])
        steps.append(grads)
    return steps


def _make_variables(values):
    variables = []
    for path, value in values.items():
        scope, name = path.split("/")
        with keras.name_scope(scope):
            variables.append(keras.Variable(value.astype("float32"), name=name))
    return variables


def _schedule_reference(step, base, total, warmup):
    # Linear warm-up from 0, then cosine decay to 0 (SimCLRv2 §3.1).
    if step < warmup:
        return base * step / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return base * 0.5 * (1.0 + np.cos(np.pi * progress))


class LARSReference:
    """LARS in float64, written from SimCLR's update equations."""

    def __init__(
        self,
        momentum=0.9,
        weight_decay=0.0,
        eeta=0.001,
        nesterov=False,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        exclude_rank_1=True,
    ):
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.eeta = eeta
        self.nesterov = nesterov
        self.decay_patterns = exclude_from_weight_decay or []
        self.adapt_patterns = (
            self.decay_patterns
            if exclude_from_layer_adaptation is None
            else exclude_from_layer_adaptation
        )
        self.exclude_rank_1 = exclude_rank_1
        self.velocity = {}

    def step(self, weights, grads, lr):
        new_weights = {}
        for path, w in weights.items():
            g = grads[path]
            by_rank = self.exclude_rank_1 and w.ndim <= 1
            decayed = not by_rank and not any(
                re.search(p, path) for p in self.decay_patterns
            )
            adapted = not by_rank and not any(
                re.search(p, path) for p in self.adapt_patterns
            )
            if decayed:
                g = g + self.weight_decay * w
            trust = 1.0
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            if adapted and w_norm > 0 and g_norm > 0:
                trust = self.eeta * w_norm / g_norm
            scaled_lr = lr * trust
            v = self.velocity.get(path, np.zeros_like(w))
            v = self.momentum * v + scaled_lr * g
            self.velocity[path] = v
            if self.nesterov:
                new_weights[path] = w - (self.momentum * v + scaled_lr * g)
            else:
                new_weights[path] = w - v
        return new_weights


CONFIGS = {
    "decay": dict(
        weight_decay=0.1, eeta=0.05, exclude_from_weight_decay=["head_sup"]
    ),
    "nesterov": dict(
        weight_decay=0.1,
        eeta=0.05,
        nesterov=True,
        exclude_from_weight_decay=["head_sup"],
    ),
    # Without decay the zero gradient of "frozen" has ||g'|| = 0.
    "no_decay": dict(weight_decay=0.0, eeta=0.05),
    "rank_1_included": dict(
        weight_decay=0.1, eeta=0.05, exclude_rank_1=False, momentum=0.5
    ),
    "separate_lists": dict(
        weight_decay=0.1,
        eeta=0.05,
        exclude_from_weight_decay=["head_supervised/"],
        exclude_from_layer_adaptation=["^conv/", "zero_init"],
    ),
    "no_momentum": dict(weight_decay=0.01, eeta=0.2, momentum=0.0),
}


class TestLARS(TestCase):
    @pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
    def test_matches_numpy_reference(self, config):
        kwargs = CONFIGS[config]
        rng = np.random.default_rng(1)
        values = _initial_values(rng)
        all_grads = _gradients(rng, num_steps=5)
        variables = _make_variables(values)
        optimizer = LARS(learning_rate=0.5, **kwargs)
        reference = LARSReference(**kwargs)
        expected = values
        for grads in all_grads:
            optimizer.apply(
                [grads[v.path].astype("float32") for v in variables],
                variables,
            )
            expected = reference.step(expected, grads, lr=0.5)
        for variable in variables:
            # Compare the total change: the adapted steps are small next to
            # the weights, so comparing weights alone would hide errors.
            self.assertAllClose(
                variable.numpy() - values[variable.path].astype("float32"),
                expected[variable.path] - values[variable.path],
                atol=2e-6,
                rtol=1e-4,
                msg=variable.path,
            )

    def test_matches_numpy_reference_with_schedule(self):
        kwargs = CONFIGS["decay"]
        rng = np.random.default_rng(2)
        values = _initial_values(rng)
        all_grads = _gradients(rng, num_steps=5)
        variables = _make_variables(values)
        schedule = WarmupCosineDecay(0.5, total_steps=4, warmup_steps=2)
        optimizer = LARS(learning_rate=schedule, **kwargs)
        reference = LARSReference(**kwargs)
        expected = values
        for step, grads in enumerate(all_grads):
            optimizer.apply(
                [grads[v.path].astype("float32") for v in variables],
                variables,
            )
            lr = _schedule_reference(step, 0.5, total=4, warmup=2)
            expected = reference.step(expected, grads, lr=lr)
        for variable in variables:
            self.assertAllClose(
                variable.numpy() - values[variable.path].astype("float32"),
                expected[variable.path] - values[variable.path],
                atol=2e-6,
                rtol=1e-4,
                msg=variable.path,
            )

    def test_exclusions_with_zero_gradients(self):
        # With g = 0 only decayed variables move (g' = wd * w), so this
        # checks the exclusion rules without the reference.
        rng = np.random.default_rng(3)
        values = _initial_values(rng)
        variables = _make_variables(values)
        optimizer = LARS(
            learning_rate=0.5,
            weight_decay=0.1,
            exclude_from_weight_decay=["head_supervised"],
        )
        optimizer.apply(
            [np.zeros(v.shape, "float32") for v in variables], variables
        )
        moved = {
            v.path
            for v in variables
            if not np.array_equal(v.numpy(), values[v.path].astype("float32"))
        }
        # zero_init has w = 0, hence g' = 0: it does not move either.
        assert moved == {"encoder/kernel", "conv/kernel", "frozen/kernel"}

    def test_trust_ratio_of_one_step(self):
        # momentum 0, one step: w1 = w0 - lr * eeta * ||w0|| / ||g|| * g.
        w0 = np.array([[3.0, 0.0], [0.0, 4.0]])  # ||w0|| = 5
        g = np.array([[0.0, 1.0], [0.0, 0.0]])  # ||g|| = 1
        variable = keras.Variable(w0.astype("float32"), name="kernel")
        optimizer = LARS(learning_rate=2.0, momentum=0.0, eeta=0.1)
        optimizer.apply([g.astype("float32")], [variable])
        self.assertAllClose(variable, w0 - 2.0 * 0.1 * 5.0 * g)

    def test_base_method_exclude_from_weight_decay(self):
        kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
        other = keras.Variable(np.ones((2, 2), "float32"), name="other")
        optimizer = LARS(learning_rate=0.5, weight_decay=0.1)
        optimizer.exclude_from_weight_decay(var_list=[kernel])
        optimizer.apply([np.zeros((2, 2), "float32")] * 2, [kernel, other])
        self.assertAllClose(kernel, np.ones((2, 2)))
        assert np.all(other.numpy() < 1.0)

    def test_exclude_variables_gives_plain_sgd(self):
        w0 = np.array([[3.0, 0.0], [0.0, 4.0]], "float32")
        g = np.array([[0.0, 1.0], [0.0, 0.0]], "float32")
        excluded = keras.Variable(w0, name="kernel")
        other = keras.Variable(w0, name="other")
        optimizer = LARS(
            learning_rate=2.0, momentum=0.0, eeta=0.1, weight_decay=0.1
        )
        optimizer.exclude_variables([excluded])
        # A second call adds to the first rather than replacing it.
        optimizer.exclude_variables([])
        optimizer.apply([g, g], [excluded, other])
        self.assertAllClose(excluded, w0 - 2.0 * g)  # no trust, no decay
        decayed = g + 0.1 * w0
        trust = 0.1 * 5.0 / np.linalg.norm(decayed)
        self.assertAllClose(other, w0 - 2.0 * trust * decayed)
        with pytest.raises(ValueError, match="before the optimizer is built"):
            optimizer.exclude_variables([other])

    def test_exclude_variables_from_the_trust_ratio_only(self):
        # weight_decay=False keeps the coupled decay: w - lr * (g + wd * w),
        # SGD on the loss plus SimCLR's L2 term on its supervised head.
        w0 = np.array([[3.0, 0.0], [0.0, 4.0]], "float32")
        g = np.array([[0.0, 1.0], [0.0, 0.0]], "float32")
        unadapted = keras.Variable(w0, name="kernel")
        other = keras.Variable(w0, name="other")
        optimizer = LARS(
            learning_rate=2.0, momentum=0.0, eeta=0.1, weight_decay=0.1
        )
        optimizer.exclude_variables([unadapted], weight_decay=False)
        optimizer.apply([g, g], [unadapted, other])
        decayed = g + 0.1 * w0
        self.assertAllClose(unadapted, w0 - 2.0 * decayed)
        trust = 0.1 * 5.0 / np.linalg.norm(decayed)
        self.assertAllClose(other, w0 - 2.0 * trust * decayed)

    @pytest.mark.parametrize("nesterov", [False, True])
    def test_compiled_fit_matches_reference(self, nesterov):
        # A linear model with MSE has a closed-form gradient, so the whole
        # compiled train step (XLA on TensorFlow, jit on JAX) can be checked.
        rng = np.random.default_rng(4)
        x = rng.normal(size=(8, 3)).astype("float32")
        y = rng.normal(size=(8, 2)).astype("float32")
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(2, bias_initializer="ones")(inputs)
        model = keras.Model(inputs, outputs)
        kwargs = dict(weight_decay=0.1, eeta=0.05, nesterov=nesterov)
        schedule = WarmupCosineDecay(0.5, total_steps=3, warmup_steps=1)
        model.compile(
            optimizer=LARS(learning_rate=schedule, **kwargs), loss="mse"
        )
        kernel, bias = model.trainable_variables
        weights = {
            kernel.path: kernel.numpy().astype("float64"),
            bias.path: bias.numpy().astype("float64"),
        }
        reference = LARSReference(**kwargs)
        for step in range(4):
            residual = x @ weights[kernel.path] + weights[bias.path] - y
            scale = 2.0 / residual.size
            grads = {
                kernel.path: scale * x.T @ residual,
                bias.path: scale * residual.sum(axis=0),
            }
            lr = _schedule_reference(step, 0.5, total=3, warmup=1)
            weights = reference.step(weights, grads, lr=lr)
        model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
        self.assertAllClose(kernel, weights[kernel.path], atol=1e-5)
        self.assertAllClose(bias, weights[bias.path], atol=1e-5)

    @pytest.mark.distributed
    def test_two_replicas_match_one(self):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("MirroredStrategy is a TensorFlow feature")
        # Under MirroredStrategy `update_step` gets each replica's component
        # of a mirrored variable; the trust ratios must see the all-reduced
        # gradient. 3 steps of batch 8 on 2 replicas against 1 replica.
        result = run_in_subprocess(
            """
            from keras_ssl.optimizers import LARS

            rng = np.random.default_rng(0)
            x = rng.normal(size=(8, 3)).astype("float32")
            y = rng.normal(size=(8, 2)).astype("float32")

            def train(strategy):
                with strategy.scope():
                    keras.utils.set_random_seed(1)
                    model = keras.Sequential([
                        keras.Input((3,)),
                        keras.layers.Dense(4, activation="tanh"),
                        keras.layers.Dense(2),
                    ])
                    model.compile(
                        optimizer=LARS(0.5, weight_decay=0.1, eeta=0.05),
                        loss="mse",
                        jit_compile=False,
                    )
                initial = [w.numpy() for w in model.weights]
                model.fit(x, y, batch_size=8, epochs=3, shuffle=False,
                          verbose=0)
                return initial, [w.numpy() for w in model.weights]

            initial, single = train(tf.distribute.OneDeviceStrategy("CPU:0"))
            _, mirrored = train(
                tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
            )
            emit(
                error=max(float(np.abs(a - b).max())
                          for a, b in zip(single, mirrored)),
                moved=min(float(np.abs(a - b).max())
                          for a, b in zip(single, initial)),
            )
            """,
            num_devices=2,
            env={"KERAS_BACKEND": "tensorflow"},
        )
        assert result["error"] < 1e-5, result
        # Every variable moved, so equal weights are not trivially equal.
        assert result["moved"] > 1e-3, result

    def test_model_saving_keeps_optimizer(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(4, 3)).astype("float32")
        y = rng.normal(size=(4, 2)).astype("float32")
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, name="encoder")(inputs)
        outputs = keras.layers.Dense(2, name="head_supervised")(hidden)
        model = keras.Model(inputs, outputs)
        optimizer = LARS(
            learning_rate=WarmupCosineDecay(0.1, total_steps=10),
            weight_decay=1e-4,
            nesterov=True,
            exclude_from_weight_decay=["head_supervised"],
        )
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        assert isinstance(reloaded.optimizer, LARS)
        assert reloaded.optimizer.get_config() == optimizer.get_config()
        for a, b in zip(reloaded.optimizer.variables, optimizer.variables):
            self.assertAllClose(a, b)
        # Both continue identically: momentum and step count were restored.
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        reloaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
        for a, b in zip(reloaded.weights, model.weights):
            self.assertAllClose(a, b, atol=1e-6)

    def test_config_round_trip(self):
        optimizer = LARS(
            learning_rate=WarmupCosineDecay(1.0, total_steps=100),
            momentum=0.8,
            weight_decay=1e-6,
            eeta=0.002,
            nesterov=True,
            exclude_from_weight_decay=["head_supervised", "bias"],
            exclude_from_layer_adaptation=["bias"],
            exclude_rank_1=False,
            clipnorm=1.0,
        )
        config = optimizer.get_config()
        assert config["weight_decay"] == 1e-6
        assert config["learning_rate"]["class_name"] == "WarmupCosineDecay"
        assert config["exclude_from_layer_adaptation"] == ["bias"]
        # The base class's decoupled decay must stay off.
        assert optimizer.weight_decay is None
        # Keras's `Optimizer.from_config` replaces the schedule's config by
        # the schedule in the dict it is given, hence the copy.
        rebuilt = LARS.from_config(copy.deepcopy(config))
        assert rebuilt.get_config() == config
        revived = keras.optimizers.deserialize(
            keras.optimizers.serialize(optimizer)
        )
        assert isinstance(revived, LARS)
        assert revived.get_config() == config

    def test_config_round_trip_with_float_learning_rate(self):
        optimizer = LARS(learning_rate=0.2, weight_decay=1e-4)
        rebuilt = self.run_config_round_trip(optimizer)
        assert rebuilt.weight_decay_rate == 1e-4
        assert rebuilt.weight_decay is None

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(learning_rate=0.0), "learning_rate=0.0"),
            (dict(learning_rate=-1.0), "learning_rate=-1.0"),
            (dict(momentum=1.0), "momentum=1.0"),
            (dict(momentum=-0.1), "momentum=-0.1"),
            (dict(weight_decay=-1e-4), "weight_decay=-0.0001"),
            (dict(eeta=0.0), "eeta=0.0"),
            (dict(exclude_from_weight_decay=[1]), "exclude_from_weight_decay"),
            (dict(exclude_from_layer_adaptation=["("]), "layer_adaptation"),
        ],
    )
    def test_invalid_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=re.escape(message)):
            LARS(**kwargs)


class TestKerasPrivateAPI(TestCase):
    """The two private Keras optimizer methods LARS relies on (checked
    against Keras 3.15.1): this fails if Keras renames them or changes
    what they answer."""

    def test_get_variable_index_follows_the_built_variables(self):
        variables = [
            keras.Variable(np.ones(shape, "float32"), name=f"v{i}")
            for i, shape in enumerate([(2,), (3, 2), (1,)])
        ]
        optimizer = keras.optimizers.SGD()
        optimizer.build(variables)
        for index, variable in enumerate(variables):
            assert optimizer._get_variable_index(variable) == index
            if keras.backend.backend() == "tensorflow":
                # `update_step` may get the `tf.Variable`: the same slot.
                backend_variable = variable.value
                assert optimizer._get_variable_index(backend_variable) == index

    def test_use_weight_decay_reads_exclude_from_weight_decay(self):
        kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
        bias = keras.Variable(np.ones((2,), "float32"), name="bias")
        other = keras.Variable(np.ones((2,), "float32"), name="other")
        optimizer = keras.optimizers.SGD(weight_decay=0.1)
        optimizer.exclude_from_weight_decay(
            var_list=[kernel], var_names=["bias"]
        )
        assert not optimizer._use_weight_decay(kernel)
        assert not optimizer._use_weight_decay(bias)
        assert optimizer._use_weight_decay(other)

    def test_lars_goes_through_them(self):
        kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
        other = keras.Variable(np.ones((2, 2), "float32"), name="other")
        optimizer = LARS(weight_decay=0.1)
        optimizer.exclude_from_weight_decay(var_list=[kernel])
        optimizer.build([kernel, other])
        assert optimizer._slot_index(other) == 1
        assert optimizer._decayed == (False, True)
