import math
import sys

import keras
import numpy as np
import pytest

from keras_ssl.losses.semppl import VOTE_FRACTIONS
from keras_ssl.losses.semppl import SemPPL
from keras_ssl.losses.semppl import global_anchor_indices
from keras_ssl.losses.semppl import majority_vote
from keras_ssl.losses.semppl import pseudo_label_quality
from keras_ssl.losses.semppl import pseudo_labels
from keras_ssl.losses.semppl import sample_negative_indices
from keras_ssl.losses.semppl import sample_semantic_positive_indices
from keras_ssl.losses.semppl import semantic_positives
from keras_ssl.losses.semppl import semppl
from keras_ssl.losses.semppl import view_voting
from keras_ssl.testing import TestCase

BACKEND = keras.backend.backend()
# JAX runs float64 inputs in float32 unless x64 is enabled.
EXACT = 1e-9 if BACKEND == "tensorflow" else 2e-5


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference(
    online_large,
    target_large,
    negative_indices,
    online_small=(),
    semantic_positives=(),
    semantic_mask=None,
    anchor_indices=None,
    tau=0.2,
    alpha=0.2,
    lam=5.0,
    c=0.3,
    kl_as_cross_entropy=False,
):
    """Eq. (10) with the pseudo-code's loops and normaliser, in float64.

    phi(a, b) = tau * exp(<a, b> / tau) on l2-normalised vectors (eq. 1);
    p(.) of eqs. (5)-(6) is the ratio over the positive and the negatives.
    With `kl_as_cross_entropy` each KL is replaced by its part outside the
    stop-gradient, `-E_p log q`, whose finite differences give the
    gradient that Appendix B's `sg[E_p log p] - E_p log q` has.
    """
    on_l = [_unit(x) for x in online_large]
    on_s = [_unit(x) for x in online_small]
    tg = [_unit(x) for x in target_large]
    sem = [_unit(x) for x in semantic_positives]
    num_large, num_small = len(on_l), len(on_s)
    batch = len(on_l[0])
    num_pos = sem[0].shape[1] if sem else 0
    if anchor_indices is None:
        anchor_indices = range(batch)
    if semantic_mask is None:
        semantic_mask = [True] * batch

    def phi(a, b):
        return tau * math.exp(float(a @ b) / tau)

    def distribution(anchor, positive, negatives):
        scores = [phi(anchor, positive)] + [phi(anchor, n) for n in negatives]
        total = math.fsum(scores)
        return [s / total for s in scores]

    def kl(p, q):
        cross = -math.fsum(a * math.log(b) for a, b in zip(p, q))
        if kl_as_cross_entropy:
            return cross
        return math.fsum(a * math.log(a) for a in p) + cross

    total = 0.0
    for m in range(batch):
        own = anchor_indices[m]
        negs = [[t[n] for n in negative_indices[m]] for t in tg]
        for i, anchor in enumerate(on_l + on_s):
            for j in range(num_large):
                p = distribution(anchor[m], tg[j][own], negs[j])
                total += c * -math.log(p[0])
                swapped = i < num_large and i != j
                if swapped:
                    q = distribution(on_l[j][m], tg[i][own], negs[i])
                    total += lam * kl(p, q)
                if not semantic_mask[m]:
                    continue
                for s in range(num_pos):
                    p = distribution(anchor[m], sem[j][m, s], negs[j])
                    total += c * alpha * -math.log(p[0])
                    if swapped:
                        q = distribution(on_l[j][m], sem[i][m, s], negs[i])
                        total += lam * kl(p, q)
    normaliser = (num_large + num_small) * num_large * (1 + num_pos)
    return total / batch / normaliser


def make_case(
    batch=4,
    rows=None,
    dim=5,
    num_large=2,
    num_small=0,
    num_pos=0,
    num_neg=3,
    masked=(),
    seed=0,
    dtype="float64",
):
    """Fixed inputs and fixed samples: negatives never the anchor itself."""
    rng = np.random.default_rng(seed)
    rows = rows or batch
    anchor_indices = rng.permutation(rows)[:batch].astype("int32")
    negatives = np.stack(
        [
            rng.permutation([r for r in range(rows) if r != a])[:num_neg]
            for a in anchor_indices
        ]
    ).astype("int32")
    case = {
        "online_large": [
            rng.normal(size=(batch, dim)).astype(dtype)
            for _ in range(num_large)
        ],
        "target_large": [
            rng.normal(size=(rows, dim)).astype(dtype) for _ in range(num_large)
        ],
        "negative_indices": negatives,
        "online_small": [
            rng.normal(size=(batch, dim)).astype(dtype)
            for _ in range(num_small)
        ],
        "anchor_indices": anchor_indices,
    }
    if num_pos:
        case["semantic_positives"] = [
            rng.normal(size=(batch, num_pos, dim)).astype(dtype)
            for _ in range(num_large)
        ]
        case["semantic_mask"] = np.array(
            [m not in masked for m in range(batch)]
        )
    return case


CASES = {
    "two_large": dict(),
    "multi_crop_semantic": dict(num_small=2, num_pos=3, masked=(1,)),
    "global_targets": dict(
        batch=3, rows=7, num_large=3, num_small=1, num_pos=2, num_neg=4
    ),
    "one_large_view": dict(num_large=1, num_small=1, num_pos=1),
    "batch_one": dict(batch=1, rows=5, num_pos=2, num_neg=4),
}


def _reference_of(case, **kwargs):
    return reference(
        case["online_large"],
        case["target_large"],
        case["negative_indices"],
        case["online_small"],
        case.get("semantic_positives", ()),
        case.get("semantic_mask"),
        case["anchor_indices"],
        **kwargs,
    )


class TestSemPPLFunction(TestCase):
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_matches_float64_reference(self, name):
        case = make_case(**CASES[name])
        loss = semppl(**case)
        self.assertAllClose(loss, _reference_of(case), atol=EXACT, rtol=EXACT)

    def test_float32_inputs(self):
        case = make_case(num_small=1, num_pos=2, dtype="float32")
        loss = semppl(**case)
        self.assertDType(loss, "float32")
        self.assertAllClose(loss, _reference_of(case), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize(
        "scales",
        [
            dict(
                temperature=0.5,
                alpha=1.0,
                invariance_scale=0.0,
                contrastive_scale=1.0,
            ),
            dict(
                temperature=0.1,
                alpha=0.0,
                invariance_scale=2.0,
                contrastive_scale=0.0,
            ),
        ],
    )
    def test_scales(self, scales):
        case = make_case(num_small=1, num_pos=2, masked=(0,))
        expected = _reference_of(
            case,
            tau=scales["temperature"],
            alpha=scales["alpha"],
            lam=scales["invariance_scale"],
            c=scales["contrastive_scale"],
        )
        self.assertAllClose(semppl(**case, **scales), expected, atol=EXACT)

    def test_metrics_decompose_the_loss(self):
        case = make_case(num_small=1, num_pos=2, masked=(2,))
        loss, parts = semppl(**case, return_metrics=True)
        recombined = (
            0.3 * (parts["augmentation_loss"] + 0.2 * parts["semantic_loss"])
            + 5.0 * parts["invariance_loss"]
        )
        self.assertAllClose(loss, recombined, atol=EXACT)
        # Each part on its own is the reference with the others switched
        # off.
        self.assertAllClose(
            parts["invariance_loss"],
            _reference_of(case, c=0.0, lam=1.0),
            atol=EXACT,
        )
        self.assertAllClose(
            parts["semantic_loss"],
            _reference_of(case, c=1.0, alpha=1.0, lam=0.0)
            - _reference_of(case, c=1.0, alpha=0.0, lam=0.0),
            atol=EXACT,
        )

    def test_masked_anchor_has_no_semantic_term(self):
        case = make_case(num_pos=2, masked=(1,))
        changed = dict(case)
        # Whatever the masked anchor's "positives" are, they cannot count.
        changed["semantic_positives"] = [
            np.where(np.arange(4)[:, None, None] == 1, 7.0 * s[::-1], s)
            for s in case["semantic_positives"]
        ]
        self.assertAllClose(semppl(**changed), semppl(**case), atol=EXACT)

    def test_split_batch_averages_to_the_whole(self):
        # What each replica computes: its own anchors against the global
        # targets. Equal halves average to the loss of the whole batch.
        case = make_case(batch=6, num_small=1, num_pos=2, masked=(4,))
        whole = semppl(**case)
        halves = []
        for rows in (slice(0, 3), slice(3, 6)):
            part = dict(case)
            for key in ("online_large", "online_small", "semantic_positives"):
                part[key] = [x[rows] for x in case[key]]
            for key in ("negative_indices", "semantic_mask", "anchor_indices"):
                part[key] = case[key][rows]
            halves.append(semppl(**part))
        self.assertAllClose(np.mean(halves), whole, atol=EXACT)

    def test_gradients_follow_appendix_b(self):
        # Appendix B stops the gradient of E_p log p only: the gradient of
        # the loss is that of the reference with each KL replaced by
        # -E_p log q. Checked by central differences on the online inputs;
        # the targets and queue entries get no gradient.
        case = make_case(batch=2, dim=3, num_small=1, num_pos=1, num_neg=1)
        grads = _gradients(case)

        def f(online_large, online_small):
            return _reference_of(
                dict(
                    case, online_large=online_large, online_small=online_small
                ),
                kl_as_cross_entropy=True,
            )

        eps = 1e-6
        for key in ("online_large", "online_small"):
            for v, tensor in enumerate(case[key]):
                numeric = np.zeros_like(tensor)
                for index in np.ndindex(*tensor.shape):
                    shifted = []
                    for sign in (1, -1):
                        values = {
                            k: [x.copy() for x in case[k]]
                            for k in ("online_large", "online_small")
                        }
                        values[key][v][index] += sign * eps
                        shifted.append(f(**values))
                    numeric[index] = (shifted[0] - shifted[1]) / (2 * eps)
                self.assertAllClose(grads[key][v], numeric, atol=EXACT * 100)
        for g in grads["target_large"] + grads["semantic_positives"]:
            self.assertAllClose(g, np.zeros_like(g))

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"temperature": 0.0}, "temperature=0.0"),
            ({"alpha": -0.1}, "alpha=-0.1"),
            ({"invariance_scale": -1.0}, "invariance_scale=-1.0"),
            ({"contrastive_scale": -0.3}, "contrastive_scale=-0.3"),
        ],
    )
    def test_bad_scales(self, kwargs, match):
        case = make_case()
        with pytest.raises(ValueError, match=match):
            semppl(**case, **kwargs)
        with pytest.raises(ValueError, match=match):
            SemPPL(**kwargs)

    def test_rejects_mismatched_views(self):
        case = make_case()
        case["target_large"] = case["target_large"][:1]
        with pytest.raises(ValueError, match="one tensor per large view"):
            semppl(**case)


def _gradients(case):
    keys = (
        "online_large",
        "online_small",
        "target_large",
        "semantic_positives",
    )
    if BACKEND == "tensorflow":
        import tensorflow as tf

        variables = {k: [tf.constant(x) for x in case[k]] for k in keys}
        with tf.GradientTape() as tape:
            tape.watch(variables)
            loss = semppl(**dict(case, **variables))
        grads = tape.gradient(loss, variables)
        return {
            k: [
                np.zeros(x.shape) if g is None else g.numpy()
                for x, g in zip(variables[k], grads[k])
            ]
            for k in keys
        }
    import jax

    variables = {k: [np.asarray(x) for x in case[k]] for k in keys}

    def f(values):
        return semppl(**dict(case, **values))

    grads = jax.grad(f)(variables)
    return {k: [np.asarray(g) for g in grads[k]] for k in keys}


class TestSemPPLLoss(TestCase):
    def test_per_anchor_values_reduce_to_the_function(self):
        case = make_case(num_small=1, num_pos=2, masked=(3,))
        loss_fn = SemPPL()
        self.assertAllClose(loss_fn(None, case), semppl(**case), atol=1e-6)
        # Anchor 3 weighted twice: the reference with anchor 3 repeated.
        weights = np.array([1.0, 1.0, 1.0, 2.0])
        repeated = {k: case[k] if k == "target_large" else None for k in case}
        order = np.array([0, 1, 2, 3, 3])
        for k in ("online_large", "online_small", "semantic_positives"):
            repeated[k] = [x[order] for x in case[k]]
        for k in ("negative_indices", "semantic_mask", "anchor_indices"):
            repeated[k] = case[k][order]
        expected = _reference_of(repeated) * 5 / 4
        self.assertAllClose(
            loss_fn(None, case, sample_weight=weights), expected, atol=1e-6
        )

    def test_config_round_trip(self):
        loss_fn = SemPPL(
            temperature=0.3,
            alpha=0.5,
            invariance_scale=1.0,
            contrastive_scale=2.0,
        )
        rebuilt = SemPPL.from_config(loss_fn.get_config())
        case = make_case(num_pos=1)
        self.assertAllClose(rebuilt(None, case), loss_fn(None, case))
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss_fn)
        )
        assert revived.get_config() == loss_fn.get_config()

    def test_rejects_bad_y_pred(self):
        with pytest.raises(ValueError, match="must be a dict"):
            SemPPL()(None, np.zeros((4, 3)))
        case = make_case()
        with pytest.raises(ValueError, match="Received keys"):
            SemPPL()(None, dict(case, queue=np.zeros((2, 5))))


class TestSampling(TestCase):
    def test_negatives_are_top_noise_without_self(self):
        rng = np.random.default_rng(0)
        noise = rng.uniform(size=(4, 9)).astype("float32")
        anchors = np.array([3, 0, 8, 5], "int32")
        indices = keras.ops.convert_to_numpy(
            sample_negative_indices(noise, anchors, num_negatives=4)
        )
        for row, anchor, got in zip(noise, anchors, indices):
            ranked = [r for r in np.argsort(-row) if r != anchor][:4]
            assert list(got) == ranked

    def test_negatives_are_uniform_over_other_rows(self):
        rng = np.random.default_rng(1)
        noise = rng.uniform(size=(3000, 6)).astype("float32")
        anchors = np.full((3000,), 2, "int32")
        indices = keras.ops.convert_to_numpy(
            sample_negative_indices(noise, anchors, num_negatives=2)
        )
        assert not np.any(indices == 2)
        assert np.all(indices[:, 0] != indices[:, 1])
        counts = np.bincount(indices.ravel(), minlength=6)
        # 6000 draws over the 5 other rows: 1200 each, sd ~31.
        assert counts[2] == 0
        assert np.all(np.abs(counts[[0, 1, 3, 4, 5]] - 1200) < 150)

    def test_negatives_need_a_larger_batch(self):
        with pytest.raises(ValueError, match="num_negatives=5"):
            sample_negative_indices(
                np.zeros((2, 5), "float32"), np.arange(2), num_negatives=5
            )

    def test_semantic_positives_share_the_label_and_are_uniform(self):
        queue_labels = np.array([2, 0, 2, 1, 2, 0, 2, -1], "int32")
        # Slot 6 was never written (a label there must not matter).
        queue_valid = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
        anchor_labels = np.array([2, 0, 1, 3], "int32")
        # u at the centres of thirds: each of class 2's three valid slots
        # exactly once.
        uniform = np.tile([[1 / 6, 1 / 2, 5 / 6]], (4, 1)).astype("float32")
        slots, has = sample_semantic_positive_indices(
            uniform, anchor_labels, queue_labels, queue_valid, num_classes=4
        )
        slots = keras.ops.convert_to_numpy(slots)
        has = keras.ops.convert_to_numpy(has)
        assert sorted(slots[0]) == [0, 2, 4]
        assert set(slots[1]) == {1, 5}
        assert list(slots[2]) == [3, 3, 3]
        # Class 3 has no entry: no positive, never a wrong one.
        assert list(has) == [True, True, True, False]
        for label, row, ok in zip(anchor_labels, slots, has):
            if ok:
                assert np.all(queue_labels[row] == label)
                assert np.all(queue_valid[row])

    def test_semantic_positive_frequencies(self):
        rng = np.random.default_rng(2)
        queue_labels = rng.integers(0, 3, (20,)).astype("int32")
        queue_valid = rng.uniform(size=20) < 0.7
        uniform = rng.uniform(size=(2000, 3)).astype("float32")
        anchor_labels = np.ones((2000,), "int32")
        slots, has = sample_semantic_positive_indices(
            uniform, anchor_labels, queue_labels, queue_valid, num_classes=3
        )
        slots = keras.ops.convert_to_numpy(slots).ravel()
        eligible = np.flatnonzero(queue_valid & (queue_labels == 1))
        assert np.all(keras.ops.convert_to_numpy(has))
        counts = np.bincount(slots, minlength=20)
        assert set(np.flatnonzero(counts)) == set(eligible)
        expected = 6000 / len(eligible)
        assert np.all(np.abs(counts[eligible] - expected) < 0.15 * expected)


def reference_votes(online_large, queues, labels, valid, num_classes, k):
    votes = np.zeros((len(online_large[0]), num_classes))
    keys = np.flatnonzero(valid)
    for query in online_large:
        for queue in queues:
            sims = _unit(query) @ _unit(queue[keys]).T
            for b in range(len(query)):
                for n in np.argsort(-sims[b], kind="stable")[:k]:
                    votes[b, labels[keys[n]]] += 1
    return votes


class TestViewVoting(TestCase):
    @pytest.mark.parametrize("k", [1, 3])
    def test_votes_over_all_pairs(self, k):
        rng = np.random.default_rng(3)
        online = [rng.normal(size=(5, 4)).astype("float32") for _ in range(3)]
        queues = [rng.normal(size=(9, 4)).astype("float32") for _ in range(3)]
        labels = rng.integers(0, 3, (9,)).astype("int32")
        valid = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
        votes = view_voting(online, queues, labels, valid, 3, k=k)
        expected = reference_votes(online, queues, labels, valid, 3, k)
        self.assertAllClose(votes, expected)
        # 3 x 3 lookups of k votes each.
        self.assertAllClose(np.sum(expected, axis=1), np.full(5, 9.0 * k))

    def test_invalid_slots_never_vote(self):
        # The empty slot is the exact nearest neighbour, with label 1.
        online = [np.array([[1.0, 0.0]], "float32")]
        queues = [np.array([[1.0, 0.0], [0.0, 1.0]], "float32")]
        votes = view_voting(
            online, queues, np.array([1, 0]), np.array([False, True]), 2
        )
        self.assertAllClose(votes, [[1.0, 0.0]])

    def test_majority_vote_breaks_ties_by_lowest_class(self):
        votes = np.array(
            [[1, 3, 3, 0], [0, 0, 0, 0], [2, 5, 1, 5], [0, 1, 4, 0]],
            "float32",
        )
        labels = keras.ops.convert_to_numpy(majority_vote(votes))
        assert list(labels) == [1, 0, 1, 2]


class TestBatchBookkeeping(TestCase):
    @pytest.mark.parametrize("num_unlabeled", [0, 3])
    def test_global_order_is_unlabeled_then_labeled(self, num_unlabeled):
        # Two replicas of 3 unlabeled and 2 labeled images each: the global
        # batch is [u0 u0 u0 u1 u1 u1 l0 l0 l1 l1].
        rows = [
            list(
                keras.ops.convert_to_numpy(
                    global_anchor_indices(num_unlabeled, 2, replica, 2)
                )
            )
            for replica in (0, 1)
        ]
        u = 2 * num_unlabeled
        expected = [
            list(range(r * num_unlabeled, (r + 1) * num_unlabeled))
            + [u + 2 * r, u + 2 * r + 1]
            for r in (0, 1)
        ]
        assert rows == expected

    def test_pseudo_labels_are_the_majority_of_view_votes(self):
        rng = np.random.default_rng(4)
        online = [rng.normal(size=(5, 4)).astype("float32") for _ in range(2)]
        queues = [rng.normal(size=(6, 4)).astype("float32") for _ in range(2)]
        labels = rng.integers(0, 3, (6,)).astype("int32")
        valid = np.ones(6, bool)
        pseudo, votes = pseudo_labels(online, queues, labels, valid, 3, k=2)
        expected = reference_votes(online, queues, labels, valid, 3, 2)
        self.assertAllClose(votes, expected)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(pseudo),
            keras.ops.convert_to_numpy(
                majority_vote(np.asarray(expected, "float32"))
            ),
        )

    def test_semantic_positives_read_the_same_slot_of_every_queue(self):
        rng = np.random.default_rng(5)
        queues = [rng.normal(size=(6, 3)).astype("float32") for _ in range(2)]
        queue_labels = np.array([0, 1, 0, 1, 2, 2], "int32")
        valid = np.array([1, 1, 1, 1, 0, 1], bool)
        uniform = rng.random((4, 2)).astype("float32")
        anchor_labels = np.array([0, 1, 2, 0], "int32")
        positives, has_positive = semantic_positives(
            uniform, anchor_labels, queues, queue_labels, valid, 3
        )
        slots, expected_mask = sample_semantic_positive_indices(
            uniform, anchor_labels, queue_labels, valid, 3
        )
        slots = keras.ops.convert_to_numpy(slots)
        for queue, positive in zip(queues, positives):
            self.assertAllClose(positive, queue[slots])
        self.assertAllClose(has_positive, expected_mask)

    def test_pseudo_label_quality(self):
        # 4 large views x k=1: 16 votes per image.
        votes = np.array(
            [[16, 0, 0], [5, 6, 5], [0, 12, 4], [9, 7, 0], [3, 3, 10]],
            "float32",
        )
        true_labels = np.array([0, 1, 2, 1, 2])
        metrics = pseudo_label_quality(votes, true_labels, 16)
        predicted = votes.argmax(-1)
        correct = predicted == true_labels
        value, count = metrics["pseudo_label_accuracy"]
        self.assertAllClose(value, correct.mean())
        self.assertAllClose(count, 5.0)
        for f in VOTE_FRACTIONS:
            confident = votes.max(-1) >= math.ceil(f * 16 / 100)
            hits = (confident & correct).sum()
            value, count = metrics[f"pseudo_label_precision_{f}"]
            self.assertAllClose(value, hits / max(confident.sum(), 1))
            self.assertAllClose(count, confident.sum())
            value, count = metrics[f"pseudo_label_recall_{f}"]
            self.assertAllClose(value, hits / 5)


def test_module_uses_keras_ops_only():
    # Losses are written on keras.ops only (DESIGN.md); `semppl` shadows
    # the module's name on the package, hence sys.modules.
    with open(sys.modules[SemPPL.__module__].__file__) as file:
        source = file.read()
    assert "import tensorflow" not in source
    assert "import jax" not in source
