import math

import keras
import numpy as np
import pytest

from keras_ssl import ops as kops
from keras_ssl.losses import PAWS
from keras_ssl.losses import paws
from keras_ssl.testing import TestCase

BACKEND = keras.backend.backend()


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _cross_entropy(target, probs):
    # 0 log 0 = 0: unsampled classes carry no mass in either.
    return -math.fsum(t * math.log(p) for t, p in zip(target, probs) if t > 0)


def _label_rows(labels, num_classes, smoothing):
    """y_S: one-hot, smoothed over the classes present in the batch."""
    rows = np.zeros((len(labels), num_classes))
    rows[np.arange(len(labels)), labels] = 1.0
    present = sorted(set(int(c) for c in labels))
    for row in rows:
        for c in present:
            row[c] = (1 - smoothing) * row[c] + smoothing / len(present)
    return rows


def _predict(z, support, rows, tau):
    """pi_d(z, z_S) of §3.2, one support sample at a time."""
    sims = [math.exp(_cos(z, s) / tau) for s in support]
    total = math.fsum(sims)
    return sum(w / total * y for w, y in zip(sims, rows))


def _sharpen(p, T):
    powered = p ** (1.0 / T)
    return powered / powered.sum()


def reference(
    views,
    support,
    labels,
    num_classes,
    tau=0.1,
    T=0.25,
    smoothing=0.1,
    me_max=True,
    targets_from=None,
    threshold=1e-4,
):
    """Eq. (4) of PAWS in float64, one image and one view at a time.

    `targets_from=(views, support)` computes the sharpened targets at
    another point (held fixed), for finite differences that do not move
    the targets, as the stop-gradient prescribes. Target probabilities
    below `threshold` count as 0, as in the reference code.

    Returns the loss, H(p_bar) and the mean max of the global targets.
    """
    views = [np.asarray(v, np.float64) for v in views]
    support = np.asarray(support, np.float64)
    rows = _label_rows(labels, num_classes, smoothing)
    target_views, target_support = targets_from or (views, support)
    n, num_views = len(views[0]), len(views)
    terms, sharpened, confidence = [], [], []
    for i in range(n):
        p = [_predict(v[i], support, rows, tau) for v in views]
        sharpened += [_sharpen(q, T) for q in p]
        r1, r2 = (
            _sharpen(_predict(v[i], target_support, rows, tau), T)
            for v in target_views[:2]
        )
        confidence += [r1.max(), r2.max()]

        def cut(t):
            return np.where(t < threshold, 0.0, t)

        terms.append(_cross_entropy(cut(r1), p[1]))
        terms.append(_cross_entropy(cut(r2), p[0]))
        for k in range(2, num_views):
            terms.append(_cross_entropy(cut((r1 + r2) / 2), p[k]))
    p_bar = sum(sharpened) / (num_views * n)
    mean_entropy = -math.fsum(q * math.log(q) for q in p_bar if q > 0)
    loss = math.fsum(terms) / (num_views * n)
    if me_max:
        loss -= mean_entropy
    return loss, mean_entropy, float(np.mean(confidence))


def make_case(batch=3, dim=5, num_views=2, classes=(0, 2, 3), per_class=2):
    """Views that agree a little, a class-balanced support batch."""
    rng = np.random.default_rng(batch * 100 + num_views * 10 + dim)
    base = rng.normal(size=(batch, dim))
    views = [
        base + 0.8 * rng.normal(size=(batch, dim)) for _ in range(num_views)
    ]
    labels = np.repeat(np.asarray(classes, "int32"), per_class)
    support = rng.normal(size=(len(labels), dim))
    return (
        [v.astype("float32") for v in views],
        support.astype("float32"),
        labels,
    )


def gradient_fn(fn, num_args):
    """A function returning d fn(*args) / d args, on the current backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def grad(*args):
            args = [tf.constant(a) for a in args]
            with tf.GradientTape() as tape:
                tape.watch(args)
                value = fn(*args)
            return [g.numpy() for g in tape.gradient(value, args)]

        return grad
    if BACKEND == "jax":
        import jax

        # One compiled program instead of many op-by-op dispatches.
        compiled = jax.jit(jax.grad(fn, tuple(range(num_args))))
        return lambda *args: [np.asarray(g) for g in compiled(*args)]
    pytest.skip(f"no gradient helper for {BACKEND}")


def gradients(fn, *args):
    """d fn(*args) / d args, on the current backend."""
    return gradient_fn(fn, len(args))(*args)


def suncet_paws(
    anchor_views,
    anchor_supports,
    target_views,
    target_supports,
    labels,
    multicrop,
    tau=0.1,
    T=0.25,
):
    """suncet's `init_paws_loss` (PAWS's code) in NumPy float64.

    Inputs as its training loop hands them over: the anchor views stacked
    (the two global views, then `multicrop` small ones), and the target
    views as the two global views' representations in their own order;
    the loop swaps them so each view targets the other. Returns
    `loss + rloss`, the value it minimises.
    """

    def normalize(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def snn(query, supports):
        logits = normalize(query) @ normalize(supports).T / tau
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True) @ labels

    def sharpen(p):
        sharp = p ** (1.0 / T)
        return sharp / sharp.sum(axis=1, keepdims=True)

    batch = len(anchor_views) // (2 + multicrop)
    probs = snn(anchor_views, anchor_supports)
    targets = sharpen(
        snn(
            np.concatenate([target_views[batch:], target_views[:batch]]),
            target_supports,
        )
    )
    if multicrop:
        local = 0.5 * (targets[:batch] + targets[batch:])
        targets = np.concatenate([targets] + [local] * multicrop)
    targets[targets < 1e-4] *= 0
    loss = np.mean(np.sum(-targets * np.log(probs), axis=1))
    average = np.mean(sharpen(probs), axis=0)
    return loss + np.sum(average * np.log(average))


def suncet_case(num_classes, batch=4, dim=16, multicrop=1, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(batch, dim))
    views = [
        base + 0.7 * rng.normal(size=(batch, dim)) for _ in range(2 + multicrop)
    ]
    support = rng.normal(size=(num_classes, dim))
    labels = np.arange(num_classes, dtype="int32")
    # The projections before a prediction head: other vectors.
    targets = [v + 0.5 * rng.normal(size=v.shape) for v in views[:2]]
    target_support = support + 0.5 * rng.normal(size=support.shape)
    smoothed = 0.9 * np.eye(num_classes) + 0.1 / num_classes
    return views, support, labels, targets, target_support, smoothed


@pytest.mark.skipif(BACKEND != "tensorflow", reason="float64 on TF")
class TestSuncetAgreement(TestCase):
    """The loss equals PAWS's own code, target truncation included."""

    @pytest.mark.parametrize("num_classes", [10, 100, 1000])
    def test_values_and_gradients(self, num_classes):
        views, support, labels, targets, target_support, rows = suncet_case(
            num_classes
        )
        multicrop = len(views) - 2

        def ours(*args):
            return paws(
                list(args[:-1]),
                args[-1],
                labels,
                num_classes,
                target_views=targets,
                target_support=target_support,
            )

        def theirs(point):
            return suncet_paws(
                np.concatenate(point[:-1]),
                point[-1],
                np.concatenate(targets),
                target_support,
                rows,
                multicrop,
            )

        point = views + [support]
        expected = theirs(point)
        self.assertAllClose(ours(*point), expected, atol=1e-12, rtol=1e-12)
        # Without the truncation the values differ measurably.
        untruncated = paws(
            views,
            support,
            labels,
            num_classes,
            target_views=targets,
            target_support=target_support,
            target_threshold=0.0,
        )
        assert abs(float(untruncated) - expected) > 1e-9 * num_classes
        # Gradients: the targets are other inputs, held fixed.
        grads = gradients(ours, *point)
        rng = np.random.default_rng(1)
        eps = 1e-6
        for which, grad in enumerate(grads):
            indices = list(np.ndindex(point[which].shape))
            if len(indices) > 64:
                chosen = rng.choice(len(indices), 64, replace=False)
                indices = [indices[i] for i in chosen]
            for index in indices:
                moved = [[p.copy() for p in point] for _ in range(2)]
                moved[0][which][index] += eps
                moved[1][which][index] -= eps
                numeric = (theirs(moved[0]) - theirs(moved[1])) / (2 * eps)
                assert abs(grad[index] - numeric) < 1e-7 * max(
                    1.0, abs(numeric)
                ), (which, index, grad[index], numeric)

    def test_targets_from_the_views_by_default(self):
        views, support, labels, _, _, rows = suncet_case(100, multicrop=2)
        expected = suncet_paws(
            np.concatenate(views),
            support,
            np.concatenate(views[:2]),
            support,
            rows,
            multicrop=2,
        )
        self.assertAllClose(
            paws(views, support, labels, 100), expected, atol=1e-12
        )

    def test_rejects_bad_targets(self):
        views, support, labels, targets, target_support, _ = suncet_case(10)
        with pytest.raises(ValueError, match="go together"):
            paws(views, support, labels, 10, target_views=targets)
        with pytest.raises(ValueError, match="length 3"):
            paws(
                views,
                support,
                labels,
                10,
                target_views=views,
                target_support=target_support,
            )
        with pytest.raises(ValueError, match="target_threshold=1.5"):
            paws(views, support, labels, 10, target_threshold=1.5)


class TestPAWSFunction(TestCase):
    @pytest.mark.parametrize("num_views", [2, 5])
    @pytest.mark.parametrize("me_max", [True, False])
    @pytest.mark.parametrize("smoothing", [0.0, 0.1])
    def test_matches_reference(self, num_views, me_max, smoothing):
        # 5 global class ids, only 3 of them sampled.
        views, support, labels = make_case(num_views=num_views)
        loss, metrics = paws(
            views,
            support,
            labels,
            num_classes=5,
            label_smoothing=smoothing,
            me_max=me_max,
            return_metrics=True,
        )
        expected, mean_entropy, confidence = reference(
            views, support, labels, 5, smoothing=smoothing, me_max=me_max
        )
        self.assertShape(loss, ())
        self.assertAllClose(loss, expected, atol=2e-5, rtol=1e-5)
        self.assertAllClose(metrics["me_max"], mean_entropy, atol=2e-5)
        self.assertAllClose(metrics["target_confidence"], confidence, atol=2e-5)
        cross_entropy = expected + (mean_entropy if me_max else 0.0)
        self.assertAllClose(
            metrics["cross_entropy"], cross_entropy, atol=2e-5, rtol=1e-5
        )

    @pytest.mark.parametrize("tau,T", [(0.1, 0.25), (0.5, 0.5), (0.05, 1.0)])
    def test_temperatures(self, tau, T):
        views, support, labels = make_case(batch=2, num_views=4)
        loss = paws(
            views, support, labels, 5, temperature=tau, sharpen_temperature=T
        )
        expected = reference(views, support, labels, 5, tau=tau, T=T)[0]
        self.assertAllClose(loss, expected, atol=2e-5, rtol=1e-5)

    @pytest.mark.skipif(BACKEND != "tensorflow", reason="float64 on TF")
    def test_float64_is_exact(self):
        views, support, labels = make_case(batch=4, num_views=8)
        views = [v.astype("float64") for v in views]
        loss, metrics = paws(
            views, support.astype("float64"), labels, 5, return_metrics=True
        )
        expected = reference(views, support, labels, 5)
        self.assertAllClose(loss, expected[0], atol=1e-12, rtol=1e-12)
        self.assertAllClose(metrics["me_max"], expected[1], atol=1e-12)

    def test_one_hot_rows_equal_class_ids(self):
        views, support, labels = make_case(num_views=3)
        rows = np.eye(5, dtype="float32")[labels]
        self.assertAllClose(
            paws(views, support, rows),
            paws(views, support, labels, num_classes=5),
            atol=1e-6,
        )

    def test_global_ids_equal_per_batch_indexing(self):
        # PAWS numbers the sampled classes 0..C-1 in every support batch;
        # global ids with unsampled classes must give the same loss.
        views, support, labels = make_case(num_views=4, classes=(1, 6, 8))
        per_batch = np.searchsorted([1, 6, 8], labels)
        _, global_metrics = paws(
            views, support, labels, 10, return_metrics=True
        )
        global_loss = paws(views, support, labels, 10)
        local_loss, local_metrics = paws(
            views, support, per_batch, 3, return_metrics=True
        )
        self.assertAllClose(global_loss, local_loss, atol=1e-6)
        for name in local_metrics:
            self.assertAllClose(
                global_metrics[name], local_metrics[name], atol=1e-6
            )

    def test_scale_invariant(self):
        views, support, labels = make_case()
        self.assertAllClose(
            paws([3.0 * v for v in views], 0.2 * support, labels, 5),
            paws(views, support, labels, 5),
            atol=1e-5,
        )

    def test_gradient_reaches_support_but_not_through_targets(self):
        # Accommodation: the support embeddings get a gradient. The targets
        # are constants: autodiff must equal finite differences of eq. (4)
        # with the sharpened targets frozen, and differ from those of the
        # loss whose targets move.
        views, support, labels = make_case(batch=2, dim=3, num_views=3)
        views = [v.astype("float64") for v in views]
        support = support.astype("float64")

        def loss_fn(a, b, c, s):
            return paws([a, b, c], s, labels, 5)

        grads = gradients(loss_fn, *views, support)
        assert np.abs(grads[3]).max() > 1e-3
        point = views + [support]
        eps = 1e-6
        frozen_error = moving_error = 0.0
        for which in range(4):
            for idx in np.ndindex(point[which].shape):
                values = {}
                for sign in (1, -1):
                    moved = [p.copy() for p in point]
                    moved[which][idx] += sign * eps
                    kwargs = dict(targets_from=(point[:3], point[3]))
                    values[sign] = (
                        reference(moved[:3], moved[3], labels, 5, **kwargs)[0],
                        reference(moved[:3], moved[3], labels, 5)[0],
                    )
                frozen = (values[1][0] - values[-1][0]) / (2 * eps)
                moving = (values[1][1] - values[-1][1]) / (2 * eps)
                frozen_error = max(
                    frozen_error, abs(grads[which][idx] - frozen)
                )
                moving_error = max(
                    moving_error, abs(grads[which][idx] - moving)
                )
        # float32 on JAX without x64; float64 on TF.
        assert frozen_error < 2e-3, frozen_error
        assert moving_error > 1e-2, moving_error

    def test_gradients_finite_with_collapsed_inputs(self):
        views, support, labels = make_case(batch=2, dim=4)
        z = np.tile(views[0][:1], (2, 1))
        s = np.tile(views[0][:1], (len(labels), 1))
        grads = gradients(lambda a, b, c: paws([a, b], c, labels, 5), z, z, s)
        for g in grads:
            assert np.all(np.isfinite(g))

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"temperature": 0}, "temperature=0"),
            ({"temperature": -0.1}, "temperature=-0.1"),
            ({"sharpen_temperature": 0}, "sharpen_temperature=0"),
            ({"sharpen_temperature": -1.0}, "sharpen_temperature=-1.0"),
            ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
            ({"num_classes": 0}, "num_classes=0"),
        ],
    )
    def test_rejects_bad_arguments(self, kwargs, match):
        views, support, labels = make_case()
        kwargs = {"num_classes": 5, **kwargs}
        with pytest.raises(ValueError, match=match):
            paws(views, support, labels, **kwargs)

    def test_rejects_bad_inputs(self):
        views, support, labels = make_case()
        with pytest.raises(ValueError, match="at least the two global"):
            paws(views[:1], support, labels, 5)
        with pytest.raises(ValueError, match="num_classes=None"):
            paws(views, support, labels)
        with pytest.raises(ValueError, match="same batch size"):
            paws([views[0], views[1][:2]], support, labels, 5)
        with pytest.raises(ValueError, match="same dim"):
            paws(views, support[:, :3], labels, 5)
        with pytest.raises(ValueError, match="K == num_classes"):
            paws(views, support, np.eye(4)[labels], 5)


class TestProposition1(TestCase):
    """§4, Proposition 1 and its proof, as far as they hold.

    Proposition 1: with a class-balanced support batch (Assumption 1) and
    a sharpened target that is not uniform (Assumption 2), if the
    representations collapse (`z_i = z` for all support samples and the
    anchor) then `||grad H(p+, p)|| > 0`. The proof's steps are tested
    below. The conclusion, taken literally for the gradient with respect to
    the representations or the weights, does not hold at *exact* collapse
    with the cosine similarity the paper uses: every cosine is then at its
    maximum of 1, a stationary point, so no gradient reaches the
    representations whatever the target. What holds (and is the principle
    §4 states: collapsed representations give high-entropy predictions but
    the targets are sharpened) is that near-collapsed representations are
    pushed apart with sharpening, and drawn together without it.
    """

    def _collapsed(self, classes, per_class, num_classes, smoothing):
        rng = np.random.default_rng(0)
        z = rng.normal(size=(1, 6)).astype("float32")
        counts = np.repeat(np.arange(len(classes)), per_class)
        labels = np.asarray(classes, "int32")[counts]
        rows = _label_rows(labels, num_classes, smoothing).astype("float32")
        support = np.tile(z, (len(labels), 1))
        return kops.soft_nearest_neighbour(
            np.tile(z, (4, 1)), support, rows, 0.1
        )

    @pytest.mark.parametrize("smoothing", [0.0, 0.1])
    def test_collapsed_prediction_is_uniform_over_sampled_classes(
        self, smoothing
    ):
        # Proof of Prop. 1: p = (1/n) sum_i y_i = uniform over the K
        # sampled classes under Assumption 1 (here 3 of 7 global ids).
        p = self._collapsed((0, 4, 5), [3, 3, 3], 7, smoothing)
        expected = np.zeros((4, 7))
        expected[:, [0, 4, 5]] = 1.0 / 3.0
        self.assertAllClose(p, expected, atol=1e-6)
        # Without class balance the collapsed prediction is not uniform.
        unbalanced = self._collapsed((0, 4, 5), [1, 3, 5], 7, smoothing)
        assert np.abs(np.asarray(unbalanced)[0, [0, 4, 5]] - 1 / 3).max() > 0.1

    def test_sharpening_a_non_uniform_prediction_changes_it(self):
        # Assumption 2's premise: rho(p) != p unless p is uniform (over its
        # support), so a non-uniform target differs from the collapsed p.
        p = np.array([[0.5, 0.3, 0.2, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]])
        sharp = np.asarray(kops.sharpen(p, 0.25))
        assert np.abs(sharp[0] - p[0]).max() > 0.1
        self.assertAllClose(sharp[1], p[1], atol=1e-6)

    def test_gradient_at_the_classifier_is_non_zero(self):
        # The proof's last step, p != p+ => grad H(p+, p) != 0, holds for
        # the classifier's similarity scores: at collapse they are all
        # equal, and a non-uniform target moves them.
        labels = np.repeat(np.arange(3), 2)
        rows = np.eye(3, dtype="float32")[labels]
        target = np.asarray(kops.sharpen(np.array([[0.5, 0.3, 0.2]]), 0.25))

        def loss_fn(scores):
            probs = keras.ops.matmul(keras.ops.softmax(scores), rows)
            return keras.ops.mean(
                kops.soft_cross_entropy(target.astype("float32"), probs=probs)
            )

        (grad,) = gradients(loss_fn, np.full((1, 6), 10.0, "float32"))
        assert np.abs(grad).max() > 0.1

    def test_exact_collapse_is_stationary(self):
        # See the class docstring: with cosine similarity the gradient at
        # exact collapse is zero, even for a non-uniform target (the PAWS
        # loss itself cannot even produce one there: every prediction,
        # the positive view's included, is uniform).
        rng = np.random.default_rng(1)
        z = np.tile(rng.normal(size=(1, 5)), (4, 1)).astype("float32")
        labels = np.repeat(np.arange(3), 2)
        support = np.tile(z[:1], (6, 1))
        rows = np.eye(3, dtype="float32")[labels]
        target = np.asarray(kops.sharpen(np.array([[0.6, 0.3, 0.1]]), 0.25))

        def fixed_target(a, s):
            probs = kops.soft_nearest_neighbour(a, s, rows, 0.1)
            return keras.ops.mean(
                kops.soft_cross_entropy(target.astype("float32"), probs=probs)
            )

        for g in gradients(fixed_target, z, support):
            assert np.abs(g).max() < 1e-5
        for g in gradients(
            lambda a, b, s: paws([a, b], s, labels, 3), z, z.copy(), support
        ):
            assert np.abs(g).max() < 1e-5

    @pytest.mark.parametrize("T", [0.25, 1.0])
    def test_sharpening_pushes_near_collapse_apart(self, T):
        # Near collapse, gradient descent on the representations spreads
        # them out with sharpened targets (T = 0.25) and lets them collapse
        # further without sharpening (T = 1).
        rng = np.random.default_rng(2)
        base = rng.normal(size=(1, 6))
        base /= np.linalg.norm(base)
        labels = np.repeat(np.arange(3), 2)
        z = [
            (base + 0.05 * rng.normal(size=(n, 6))).astype("float32")
            for n in (8, 8, 6)
        ]

        def spread(parts):
            x = np.concatenate(parts).astype("float64")
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            cos = x @ x.T
            return 1.0 - cos[np.triu_indices(len(x), 1)].mean()

        def loss_fn(a, b, s):
            # ME-MAX off: the claim is about the sharpened targets alone.
            return paws(
                [a, b],
                s,
                labels,
                3,
                sharpen_temperature=T,
                label_smoothing=0.0,
                me_max=False,
            )

        grad = gradient_fn(loss_fn, 3)
        before = spread(z)
        for _ in range(20):
            grads = grad(*z)
            z = [p - g for p, g in zip(z, grads)]
        ratio = spread(z) / before
        if T < 1:
            assert ratio > 5.0, ratio
        else:
            assert ratio < 1.0, ratio


class TestPAWSLoss(TestCase):
    def test_matches_function_and_reference(self):
        views, support, labels = make_case(num_views=4)
        loss_fn = PAWS(num_classes=5)
        loss = loss_fn(labels, {"views": views, "support": support})
        self.assertAllClose(loss, paws(views, support, labels, 5), atol=1e-6)
        expected = reference(views, support, labels, 5)[0]
        self.assertAllClose(loss, expected, atol=2e-5, rtol=1e-5)

    def test_per_anchor_values(self):
        views, support, labels = make_case(batch=3, num_views=3)
        y_pred = {"views": views, "support": support}
        per_anchor = PAWS(5, reduction=None)(labels, y_pred)
        self.assertShape(per_anchor, (9,))
        self.assertAllClose(
            keras.ops.mean(per_anchor),
            reference(views, support, labels, 5)[0],
            atol=2e-5,
        )
        weights = np.array([1, 0, 2, 0, 1, 1, 0.5, 0, 1], "float32")
        weighted = PAWS(5)(labels, y_pred, sample_weight=weights)
        expected = np.sum(np.asarray(per_anchor) * weights) / 9
        self.assertAllClose(weighted, expected, atol=1e-6)

    def test_one_hot_y_true(self):
        views, support, labels = make_case()
        rows = np.eye(5, dtype="float32")[labels]
        y_pred = {"views": views, "support": support}
        self.assertAllClose(
            PAWS()(rows, y_pred), PAWS(5)(labels, y_pred), atol=1e-6
        )

    def test_validation(self):
        with pytest.raises(ValueError, match="temperature=0"):
            PAWS(temperature=0)
        with pytest.raises(ValueError, match="sharpen_temperature=-1"):
            PAWS(sharpen_temperature=-1)
        views, support, labels = make_case()
        with pytest.raises(ValueError, match="'views'"):
            PAWS(5)(labels, {"views": views})

    def test_config_round_trip(self):
        loss = PAWS(
            num_classes=10,
            temperature=0.2,
            sharpen_temperature=0.5,
            label_smoothing=0.0,
            me_max=False,
            name="semi",
        )
        rebuilt = self.run_config_round_trip(loss)
        assert rebuilt.sharpen_temperature == 0.5
        assert rebuilt.me_max is False
        assert rebuilt.name == "semi"
