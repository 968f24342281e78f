import math
import sys

import keras
import numpy as np
import pytest

from keras_ssl.losses.nt_xent import NTXent
from keras_ssl.losses.nt_xent import nt_xent
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess

BACKEND = keras.backend.backend()


def reference(z1, z2, temperature, negatives=None, mask=None):
    """Eq. (1) over all 2N anchors, one anchor at a time, in float64.

    Returns the mean loss, the fraction of anchors whose positive beats
    every other candidate, and the mean entropy of the candidate softmax.
    """
    z = np.concatenate([z1, z2]).astype(np.float64)
    n = len(z1)

    def queue_of(i):
        """The negatives anchor `i` sees: its image's row of a 2-D mask."""
        if negatives is None:
            return []
        keep = np.ones(len(negatives), bool) if mask is None else mask
        if np.ndim(keep) == 2:
            keep = keep[i % n]
        return [np.asarray(q, np.float64) for q, k in zip(negatives, keep) if k]

    def sim(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    losses, correct, entropies = [], [], []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        positive = sim(z[i], z[j]) / temperature
        others = [
            sim(z[i], z[k]) / temperature
            for k in range(2 * n)
            if k not in (i, j)
        ]
        others += [sim(z[i], q) / temperature for q in queue_of(i)]
        candidates = [positive] + others  # the k != i of eq. (1)
        denominator = math.fsum(math.exp(s) for s in candidates)
        losses.append(-math.log(math.exp(positive) / denominator))
        correct.append(all(positive > s for s in others))
        probs = [math.exp(s) / denominator for s in candidates]
        entropies.append(-math.fsum(p * math.log(p) for p in probs if p > 0))
    return np.mean(losses), np.mean(correct), np.mean(entropies)


def views(batch, dim, seed=0, agreement=0.0):
    """Two views; `agreement` > 0 makes z2 a noisy copy of z1."""
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(batch, dim))
    z2 = agreement * z1 + rng.normal(size=(batch, dim))
    return z1.astype("float32"), z2.astype("float32")


def queue_case(kind, dim, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "none":
        return None, None
    negatives = rng.normal(size=(5, dim)).astype("float32")
    if kind == "queue":
        return negatives, None
    return negatives, np.array([True, False, True, True, False])


def gradients(fn, *args):
    """d fn(*args) / d args, on the current backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        return [g.numpy() for g in tape.gradient(value, args)]
    if BACKEND == "jax":
        import jax

        argnums = tuple(range(len(args)))
        return [np.asarray(g) for g in jax.grad(fn, argnums)(*args)]
    pytest.skip(f"no gradient helper for {BACKEND}")


class TestNTXentFunction(TestCase):
    @pytest.mark.parametrize("batch,dim", [(1, 3), (2, 8), (4, 5)])
    @pytest.mark.parametrize("temperature", [0.1, 0.5])
    @pytest.mark.parametrize("queue", ["none", "queue", "masked"])
    def test_matches_reference(self, batch, dim, temperature, queue):
        z1, z2 = views(batch, dim, seed=batch * 10 + dim, agreement=1.0)
        negatives, mask = queue_case(queue, dim)
        loss, metrics = nt_xent(
            z1,
            z2,
            temperature=temperature,
            negatives=negatives,
            negatives_mask=mask,
            return_metrics=True,
        )
        expected = reference(z1, z2, temperature, negatives, mask)
        self.assertShape(loss, ())
        self.assertAllClose(loss, expected[0], atol=1e-5, rtol=1e-5)
        self.assertAllClose(
            metrics["contrastive_accuracy"], expected[1], atol=1e-6
        )
        self.assertAllClose(
            metrics["contrastive_entropy"], expected[2], atol=1e-5, rtol=1e-5
        )
        plain = nt_xent(
            z1, z2, temperature, negatives=negatives, negatives_mask=mask
        )
        self.assertAllClose(plain, loss)

    @pytest.mark.skipif(BACKEND != "tensorflow", reason="float64 on TF")
    def test_float64_is_exact(self):
        rng = np.random.default_rng(3)
        z1, z2 = rng.normal(size=(2, 4, 6))
        negatives = rng.normal(size=(3, 6))
        mask = np.array([True, False, True])
        loss, metrics = nt_xent(
            z1, z2, 0.1, negatives, mask, return_metrics=True
        )
        expected = reference(z1, z2, 0.1, negatives, mask)
        self.assertAllClose(loss, expected[0], atol=1e-12, rtol=1e-12)
        self.assertAllClose(
            metrics["contrastive_entropy"], expected[2], atol=1e-12
        )

    def test_accuracy_is_not_degenerate(self):
        # Half the pairs agree strongly, half are unrelated: the metric has
        # to count per anchor, not be all-or-nothing.
        rng = np.random.default_rng(7)
        z1 = rng.normal(size=(8, 8))
        z2 = rng.normal(size=(8, 8))
        z2[:4] = z1[:4] + 0.01 * rng.normal(size=(4, 8))
        z1, z2 = z1.astype("float32"), z2.astype("float32")
        _, metrics = nt_xent(z1, z2, 0.1, return_metrics=True)
        expected = reference(z1, z2, 0.1)
        assert 0.0 < expected[1] < 1.0
        self.assertAllClose(metrics["contrastive_accuracy"], expected[1])

    def test_masked_slots_never_count(self):
        z1, z2 = views(3, 4, seed=5, agreement=1.0)
        negatives, _ = queue_case("queue", 4)
        mask = np.array([True, False, True, False, True])
        loss = nt_xent(z1, z2, 0.2, negatives, mask)
        only_valid = nt_xent(z1, z2, 0.2, negatives[mask])
        self.assertAllClose(loss, only_valid, atol=1e-6)
        # Even a masked slot identical to every positive changes nothing.
        poisoned = negatives.copy()
        poisoned[~mask] = z2[0]
        self.assertAllClose(
            nt_xent(z1, z2, 0.2, poisoned, mask), loss, atol=1e-6
        )
        # An all-False mask is the same as no queue.
        self.assertAllClose(
            nt_xent(z1, z2, 0.2, negatives, np.zeros(5, bool)),
            nt_xent(z1, z2, 0.2),
            atol=1e-6,
        )

    def test_per_image_mask_matches_reference(self):
        # A (B, Q) mask: each image (both of its views) leaves out its own
        # row of slots, e.g. the earlier keys of that same image.
        z1, z2 = views(3, 4, seed=2, agreement=1.0)
        negatives, _ = queue_case("queue", 4)
        mask = np.array(
            [
                [True, False, True, True, True],
                [True, True, True, False, False],
                [False, True, True, True, True],
            ]
        )
        loss, metrics = nt_xent(
            z1, z2, 0.2, negatives, mask, return_metrics=True
        )
        expected = reference(z1, z2, 0.2, negatives, mask)
        self.assertAllClose(loss, expected[0], atol=1e-5)
        self.assertAllClose(
            metrics["contrastive_entropy"], expected[2], atol=1e-5
        )
        # Not the same as masking nothing, nor as any one row for all.
        assert abs(float(loss) - reference(z1, z2, 0.2, negatives)[0]) > 1e-3
        for row in mask:
            other = reference(z1, z2, 0.2, negatives, row)[0]
            assert abs(float(loss) - other) > 1e-4
        # Slot 1, masked for image 0 only, made equal to image 0's
        # positive: image 0's terms are untouched, the others' follow it.
        poisoned = negatives.copy()
        poisoned[1] = z2[0]
        self.assertAllClose(
            nt_xent(z1, z2, 0.2, poisoned, mask),
            reference(z1, z2, 0.2, poisoned, mask)[0],
            atol=1e-5,
        )

    def test_scale_invariant(self):
        # Cosine similarity: the norm of the projections does not matter.
        z1, z2 = views(4, 5, seed=2)
        self.assertAllClose(
            nt_xent(3.0 * z1, 0.5 * z2, 0.1), nt_xent(z1, z2, 0.1), atol=1e-5
        )

    def test_gradients_match_finite_differences(self):
        z1, z2 = views(2, 3, seed=4, agreement=0.5)
        negatives, mask = queue_case("masked", 3)

        def loss_fn(a, b):
            return nt_xent(a, b, 0.5, negatives, mask)

        g1, g2 = gradients(loss_fn, z1, z2)
        assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))
        eps = 1e-6
        for g, which in ((g1, 0), (g2, 1)):
            numeric = np.zeros_like(g, dtype=np.float64)
            for idx in np.ndindex(g.shape):
                point = [z1.astype(np.float64), z2.astype(np.float64)]
                up = [p.copy() for p in point]
                down = [p.copy() for p in point]
                up[which][idx] += eps
                down[which][idx] -= eps
                numeric[idx] = (
                    reference(*up, 0.5, negatives, mask)[0]
                    - reference(*down, 0.5, negatives, mask)[0]
                ) / (2 * eps)
            self.assertAllClose(g, numeric, atol=1e-4, rtol=1e-3)

    @pytest.mark.skipif(BACKEND != "tensorflow", reason="TF graph ops")
    def test_gradient_has_no_scatter_as_large_as_the_logits(self):
        # Picking each positive out of the (2B, 4B + Q) logits made
        # TensorFlow's gradient a scatter into a dense tensor of their size
        # (0.7 s of a width-1 step with a 65,536-entry memory).
        import tensorflow as tf

        z1, z2 = views(4, 8, seed=3)
        rng = np.random.default_rng(0)
        negatives = rng.normal(size=(64, 8)).astype("float32")

        @tf.function
        def grads(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = nt_xent(a, b, 0.1, negatives, negatives[:, 0] > 0)
            return tape.gradient(loss, [a, b])

        graph = grads.get_concrete_function(
            tf.constant(z1), tf.constant(z2)
        ).graph
        kinds = {op.type for op in graph.get_operations()}
        assert "MatMul" in kinds or "BatchMatMulV2" in kinds
        scatters = {"UnsortedSegmentSum", "ScatterNd", "TensorScatterAdd"}
        assert not kinds & scatters, sorted(kinds & scatters)

    def test_gradients_finite_with_identical_views(self):
        z = views(4, 6, seed=9)[0]
        g1, g2 = gradients(lambda a, b: nt_xent(a, b, 0.1), z, z.copy())
        assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))

    @pytest.mark.parametrize("temperature", [0, -0.5])
    def test_rejects_temperature(self, temperature):
        z1, z2 = views(2, 3)
        with pytest.raises(ValueError, match=f"temperature={temperature}"):
            nt_xent(z1, z2, temperature)

    def test_rejects_queue_dim(self):
        z1, z2 = views(2, 4)
        with pytest.raises(ValueError, match="queue dim=6, projection dim=4"):
            nt_xent(z1, z2, negatives=np.zeros((3, 6), "float32"))

    def test_rejects_view_shapes(self):
        z1, _ = views(2, 4)
        _, z2 = views(3, 4)
        with pytest.raises(ValueError, match="same shape"):
            nt_xent(z1, z2)
        with pytest.raises(ValueError, match="rank 2"):
            nt_xent(z1[0], z1[0])

    def test_rejects_mask(self):
        z1, z2 = views(2, 4)
        negatives = np.zeros((3, 4), "float32")
        with pytest.raises(ValueError, match="negatives_mask"):
            nt_xent(z1, z2, negatives=negatives, negatives_mask=[True] * 2)
        with pytest.raises(ValueError, match="batch, queue size"):
            nt_xent(z1, z2, negatives=negatives, negatives_mask=np.ones((3, 3)))
        with pytest.raises(ValueError, match="without `negatives`"):
            nt_xent(z1, z2, negatives_mask=[True] * 3)


class TestNTXentLoss(TestCase):
    def test_stacked_views(self):
        z1, z2 = views(4, 5, seed=11, agreement=1.0)
        loss = NTXent(temperature=0.2)(None, np.concatenate([z1, z2]))
        self.assertAllClose(
            loss, reference(z1, z2, 0.2)[0], atol=1e-5, rtol=1e-5
        )

    def test_dict_with_queue(self):
        z1, z2 = views(2, 4, seed=12, agreement=1.0)
        negatives, mask = queue_case("masked", 4)
        y_pred = {
            "z1": z1,
            "z2": z2,
            "negatives": negatives,
            "negatives_mask": mask,
        }
        loss = NTXent(temperature=0.1)(None, y_pred)
        expected = reference(z1, z2, 0.1, negatives, mask)[0]
        self.assertAllClose(loss, expected, atol=1e-5, rtol=1e-5)

    def test_per_anchor_values_and_sample_weight(self):
        z1, z2 = views(3, 4, seed=13, agreement=1.0)
        stacked = np.concatenate([z1, z2])
        per_anchor = NTXent(0.5, reduction=None)(None, stacked)
        self.assertShape(per_anchor, (6,))
        self.assertAllClose(
            keras.ops.mean(per_anchor), reference(z1, z2, 0.5)[0], atol=1e-5
        )
        weights = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.0], "float32")
        weighted = NTXent(0.5)(None, stacked, sample_weight=weights)
        expected = np.sum(np.asarray(per_anchor) * weights) / 6
        self.assertAllClose(weighted, expected, atol=1e-6)

    def test_validation(self):
        with pytest.raises(ValueError, match="temperature=0"):
            NTXent(temperature=0)
        with pytest.raises(ValueError, match="even"):
            NTXent()(None, np.zeros((3, 4), "float32"))
        with pytest.raises(ValueError, match="'z1' and 'z2'"):
            NTXent()(None, {"z1": np.zeros((2, 4), "float32")})
        z1, z2 = views(2, 4)
        with pytest.raises(ValueError, match="queue dim=3, projection dim=4"):
            NTXent()(
                None,
                {"z1": z1, "z2": z2, "negatives": np.zeros((5, 3), "float32")},
            )

    def test_config_round_trip(self):
        loss = NTXent(temperature=0.3, name="contrastive")
        rebuilt = self.run_config_round_trip(loss)
        assert rebuilt.temperature == 0.3
        assert rebuilt.name == "contrastive"

    def test_compile_and_fit(self):
        # A model returning both views' projections stacked trains with
        # `compile(loss=NTXent())` and no labels.
        rng = np.random.default_rng(0)
        x1 = rng.normal(size=(8, 6)).astype("float32")
        x2 = (x1 + 0.1 * rng.normal(size=(8, 6))).astype("float32")
        dense = keras.layers.Dense(4)
        in1, in2 = keras.Input((6,)), keras.Input((6,))
        out = keras.layers.Concatenate(axis=0)([dense(in1), dense(in2)])
        model = keras.Model([in1, in2], out)
        model.compile(optimizer="sgd", loss=NTXent(temperature=0.5))
        history = model.fit([x1, x2], batch_size=8, epochs=2, verbose=0)
        expected = reference(np.asarray(dense(x1)), np.asarray(dense(x2)), 0.5)[
            0
        ]
        assert len(history.history["loss"]) == 2
        evaluated = model.evaluate([x1, x2], batch_size=8, verbose=0)
        self.assertAllClose(evaluated, expected, atol=1e-5, rtol=1e-5)


_DISTRIBUTED = """
from keras_ssl.losses import nt_xent
from keras_ssl.losses.nt_xent import NTXent

x1 = np.array({x1}, "float32")
x2 = np.array({x2}, "float32")
kernel_init = np.array({kernel}, "float32")
negatives = np.array({negatives}, "float32")
mask = np.array({mask})
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
replicas = strategy.num_replicas_in_sync
local = len(x1) // replicas
with strategy.scope():
    kernel = tf.Variable(kernel_init)
loss_fn = NTXent(temperature={temperature})


def shard(array):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            array[ctx.replica_id_in_sync_group * local:][:local]
        )
    )


def replica_step(a, b):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([a, b])
        z1, z2 = a @ kernel, b @ kernel
        y_pred = {{
            "z1": z1, "z2": z2, "negatives": negatives,
            "negatives_mask": mask,
        }}
        # What Keras's train_step takes gradients of: the reduced loss,
        # already scaled by 1 / num_replicas inside `Loss.__call__`.
        keras_loss = loss_fn(None, y_pred)
    unscaled, metrics = nt_xent(
        z1, z2, {temperature}, negatives, mask, return_metrics=True
    )
    grad_kernel = tape.gradient(keras_loss, kernel)
    grad_a, grad_b = tape.gradient(keras_loss, [a, b])
    return (
        keras_loss, unscaled, metrics["contrastive_accuracy"],
        metrics["contrastive_entropy"], grad_kernel, grad_a, grad_b,
    )


@tf.function
def step(a, b):
    return strategy.run(replica_step, args=(a, b))


outputs = step(shard(x1), shard(x2))
local_results = [strategy.experimental_local_results(o) for o in outputs]
emit(
    replicas=replicas,
    keras_loss=local_results[0],
    unscaled=local_results[1],
    accuracy=local_results[2],
    entropy=local_results[3],
    grad_kernel=local_results[4],
    grad_a=local_results[5],
    grad_b=local_results[6],
)
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute test")
class TestNTXentDistributed(TestCase):
    def test_two_replicas_match_one(self):
        import tensorflow as tf

        rng = np.random.default_rng(21)
        x1 = rng.normal(size=(4, 3)).astype("float32")
        x2 = (x1 + 0.5 * rng.normal(size=(4, 3))).astype("float32")
        kernel = rng.normal(size=(3, 5)).astype("float32")
        negatives = rng.normal(size=(3, 5)).astype("float32")
        mask = np.array([True, False, True])
        temperature = 0.5
        result = run_in_subprocess(
            _DISTRIBUTED.format(
                x1=x1.tolist(),
                x2=x2.tolist(),
                kernel=kernel.tolist(),
                negatives=negatives.tolist(),
                mask=mask.tolist(),
                temperature=temperature,
            )
        )
        assert result["replicas"] == 2

        # The single-device computation on the full batch.
        a, b, w = tf.constant(x1), tf.constant(x2), tf.Variable(kernel)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([a, b])
            z1, z2 = a @ w, b @ w
            loss = NTXent(temperature)(
                None,
                {
                    "z1": z1,
                    "z2": z2,
                    "negatives": negatives,
                    "negatives_mask": mask,
                },
            )
        _, metrics = nt_xent(
            z1, z2, temperature, negatives, mask, return_metrics=True
        )
        expected = reference(
            z1.numpy(), z2.numpy(), temperature, negatives, mask
        )
        self.assertAllClose(loss, expected[0], atol=1e-5, rtol=1e-5)

        # Each replica averages its own 2B anchors; Keras's 1/R scaling
        # then makes the sum over replicas the global mean.
        unscaled = np.array(result["unscaled"])
        self.assertAllClose(np.array(result["keras_loss"]), unscaled / 2)
        assert abs(unscaled[0] - unscaled[1]) > 1e-3  # not trivially equal
        self.assertAllClose(
            np.sum(result["keras_loss"]), loss, atol=1e-5, rtol=1e-5
        )
        self.assertAllClose(
            np.mean(result["accuracy"]),
            metrics["contrastive_accuracy"],
            atol=1e-6,
        )
        self.assertAllClose(
            np.mean(result["entropy"]),
            metrics["contrastive_entropy"],
            atol=1e-5,
            rtol=1e-5,
        )

        # The optimizer sums the replicas' gradients: that must be the
        # gradient of the global loss, for weights and for inputs alike.
        grad_kernel = tape.gradient(loss, w)
        self.assertAllClose(
            np.sum(result["grad_kernel"], axis=0),
            grad_kernel,
            atol=1e-5,
            rtol=1e-4,
        )
        grad_a, grad_b = tape.gradient(loss, [a, b])
        self.assertAllClose(
            np.concatenate(result["grad_a"]), grad_a, atol=1e-5, rtol=1e-4
        )
        self.assertAllClose(
            np.concatenate(result["grad_b"]), grad_b, atol=1e-5, rtol=1e-4
        )


_JAX = """
import jax
from keras_ssl.losses import NTXent
from keras_ssl.losses import nt_xent

z1 = np.array({z1}, "float32")
z2 = np.array({z2}, "float32")
negatives = np.array({negatives}, "float32")
mask = np.array({mask})


@jax.jit
def compiled(a, b):
    return NTXent(0.1)(
        None,
        {{"z1": a, "z2": b, "negatives": negatives, "negatives_mask": mask}},
    )


grads = jax.grad(lambda a, b: nt_xent(a, b, 0.1, negatives, mask))(z1, z2)
emit(
    backend=keras.backend.backend(),
    loss=float(compiled(z1, z2)),
    grads_finite=bool(np.all(np.isfinite(np.asarray(grads)))),
)
"""


@pytest.mark.slow
@pytest.mark.skipif(BACKEND == "jax", reason="the whole file runs on JAX")
class TestNTXentJAX(TestCase):
    def test_jax_backend(self):
        pytest.importorskip("jax")
        z1, z2 = views(3, 4, seed=31, agreement=1.0)
        negatives, mask = queue_case("masked", 4)
        result = run_in_subprocess(
            _JAX.format(
                z1=z1.tolist(),
                z2=z2.tolist(),
                negatives=negatives.tolist(),
                mask=mask.tolist(),
            ),
            num_devices=1,
            backend="jax",
            env={"JAX_PLATFORMS": "cpu"},
        )
        assert result["backend"] == "jax"
        assert result["grads_finite"]
        expected = reference(z1, z2, 0.1, negatives, mask)[0]
        self.assertAllClose(result["loss"], expected, atol=1e-5, rtol=1e-5)


def test_module_uses_keras_ops_only():
    # Losses are written on keras.ops only (DESIGN.md). The function
    # `nt_xent` shadows the module's name on the package, hence sys.modules.
    with open(sys.modules[NTXent.__module__].__file__) as file:
        source = file.read()
    assert "import tensorflow" not in source
    assert "import jax" not in source
