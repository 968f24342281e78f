import ml_dtypes
import numpy as np
import pytest
from keras import ops as keras_ops

from keras_ssl import ops as ssl_ops
from keras_ssl.testing import TestCase


def _np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class TestMath(TestCase):
    def setup_method(self):
        self.rng = np.random.default_rng(0)

    def test_l2_normalize(self):
        x = self.rng.normal(size=(4, 5))
        self.assertAllClose(ssl_ops.l2_normalize(x), _np_normalize(x))

    def test_l2_normalize_zero_vector_stays_zero(self):
        out = ssl_ops.l2_normalize(np.zeros((2, 3), "float32"))
        self.assertAllClose(out, np.zeros((2, 3)))

    def test_cosine_similarity_matrix(self):
        a = self.rng.normal(size=(3, 4))
        b = self.rng.normal(size=(5, 4))
        expected = np.array(
            [
                [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b]
                for x in a
            ]
        )
        self.assertAllClose(ssl_ops.cosine_similarity_matrix(a, b), expected)

    @pytest.mark.parametrize("temperature", [0.25, 1.0, 2.0])
    def test_sharpen(self, temperature):
        p = _np_softmax(self.rng.normal(size=(3, 6)))
        powered = p ** (1.0 / temperature)
        expected = powered / powered.sum(axis=-1, keepdims=True)
        self.assertAllClose(ssl_ops.sharpen(p, temperature), expected)

    def test_sharpen_rejects_non_positive_temperature(self):
        with pytest.raises(ValueError, match="temperature=0"):
            ssl_ops.sharpen(np.ones((1, 2)), 0)

    def test_soft_cross_entropy_logits_and_probs(self):
        logits = self.rng.normal(size=(4, 5))
        targets = _np_softmax(self.rng.normal(size=(4, 5)))
        expected = -(targets * np.log(_np_softmax(logits))).sum(-1)
        self.assertAllClose(
            ssl_ops.soft_cross_entropy(targets, logits=logits), expected
        )
        self.assertAllClose(
            ssl_ops.soft_cross_entropy(targets, probs=_np_softmax(logits)),
            expected,
        )
        with pytest.raises(ValueError, match="exactly one"):
            ssl_ops.soft_cross_entropy(targets)

    def test_entropy(self):
        p = _np_softmax(self.rng.normal(size=(3, 4)))
        self.assertAllClose(ssl_ops.entropy(p), -(p * np.log(p)).sum(-1))
        uniform = np.full((1, 8), 1 / 8)
        self.assertAllClose(ssl_ops.entropy(uniform), [np.log(8)])

    def test_soft_nearest_neighbour(self):
        queries = self.rng.normal(size=(3, 4))
        support = self.rng.normal(size=(6, 4))
        labels = np.eye(3)[[0, 1, 2, 0, 1, 2]]
        tau = 0.1
        expected = np.zeros((3, 3))
        for i, q in enumerate(queries):
            sims = np.array(
                [q @ s / np.linalg.norm(q) / np.linalg.norm(s) for s in support]
            )
            w = np.exp(sims / tau) / np.exp(sims / tau).sum()
            expected[i] = w @ labels
        out = ssl_ops.soft_nearest_neighbour(queries, support, labels, tau)
        self.assertAllClose(out, expected)

    def test_soft_nearest_neighbour_mask_leaves_rows_out(self):
        queries = self.rng.normal(size=(3, 4))
        support = self.rng.normal(size=(5, 4))
        labels = np.eye(2)[[0, 1, 0, 1, 1]]
        mask = np.array(
            [[1, 1, 0, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool
        )
        sims = _np_normalize(queries) @ _np_normalize(support).T
        expected = np.zeros((3, 2))
        for i in range(3):
            keep = np.where(mask[i])[0]
            w = _np_softmax(sims[i, keep] / 0.2)
            expected[i] = w @ labels[keep]
        out = ssl_ops.soft_nearest_neighbour(
            queries, support, labels, 0.2, mask=mask
        )
        self.assertAllClose(out, expected)

    def test_soft_nearest_neighbour_sums_of_parts_add_up(self):
        queries = self.rng.normal(size=(3, 4))
        support = self.rng.normal(size=(7, 4))
        labels = np.eye(3)[self.rng.integers(0, 3, 7)]
        logits = _np_normalize(queries) @ _np_normalize(support).T / 0.05
        top = logits.max(-1, keepdims=True)
        numerator = denominator = 0.0
        for rows in (slice(0, 3), slice(3, 7)):
            part = [
                keras_ops.convert_to_numpy(x)
                for x in ssl_ops.soft_nearest_neighbour_sums(
                    queries, support[rows], labels[rows], 0.05
                )
            ]
            m = logits[:, rows].max(-1, keepdims=True)
            weights = np.exp(logits[:, rows] - m)
            self.assertAllClose(part[2], m)
            self.assertAllClose(part[1], weights.sum(-1, keepdims=True))
            self.assertAllClose(part[0], weights @ labels[rows])
            numerator = numerator + part[0] * np.exp(part[2] - top)
            denominator = denominator + part[1] * np.exp(part[2] - top)
        self.assertAllClose(
            numerator / denominator,
            ssl_ops.soft_nearest_neighbour(queries, support, labels, 0.05),
        )

    @pytest.mark.parametrize("temperature", [None, 0.5])
    def test_neighbour_votes(self, temperature):
        sims = self.rng.uniform(-1, 1, size=(4, 3))
        labels = self.rng.integers(0, 3, size=(4, 3))
        valid = self.rng.random((4, 3)) > 0.3
        expected = np.zeros((4, 3))
        for i in range(4):
            for j in range(3):
                if valid[i, j]:
                    weight = (
                        1.0
                        if temperature is None
                        else np.exp(sims[i, j] / temperature)
                    )
                    expected[i, labels[i, j]] += weight
        out = ssl_ops.neighbour_votes(
            sims, labels, 3, temperature=temperature, valid=valid
        )
        self.assertAllClose(out, expected)

    @pytest.mark.parametrize("k", [1, 3])
    def test_knn_vote_uniform(self, k):
        queries = self.rng.normal(size=(5, 4)).astype("float32")
        keys = self.rng.normal(size=(9, 4)).astype("float32")
        labels = self.rng.integers(0, 3, size=9)
        sims = _np_normalize(queries) @ _np_normalize(keys).T
        expected = np.zeros((5, 3))
        for i in range(5):
            for j in np.argsort(-sims[i])[:k]:
                expected[i, labels[j]] += 1
        out = ssl_ops.knn_vote(queries, keys, labels, 3, k=k)
        self.assertAllClose(out, expected)

    def test_knn_vote_weighted_and_masked(self):
        queries = self.rng.normal(size=(4, 3)).astype("float32")
        keys = self.rng.normal(size=(6, 3)).astype("float32")
        labels = np.array([0, 1, 2, 0, 1, 2])
        mask = np.array([True, False, True, True, False, True])
        sims = _np_normalize(queries) @ _np_normalize(keys).T
        expected = np.zeros((4, 3))
        valid = np.where(mask)[0]
        for i in range(4):
            order = valid[np.argsort(-sims[i, valid])][:2]
            for j in order:
                expected[i, labels[j]] += np.exp(sims[i, j] / 0.5)
        out = ssl_ops.knn_vote(
            queries, keys, labels, 3, k=2, temperature=0.5, key_mask=mask
        )
        self.assertAllClose(out, expected, atol=1e-5, rtol=1e-5)

    def test_knn_vote_rejects_bad_k(self):
        with pytest.raises(ValueError, match="k=0"):
            ssl_ops.knn_vote(np.ones((1, 2)), np.ones((1, 2)), [0], 2, k=0)

    @pytest.mark.parametrize(
        "dtype, expected",
        [
            ("float16", "float32"),
            ("bfloat16", "float32"),
            ("float32", "float32"),
            ("float64", "float64"),
        ],
    )
    def test_loss_dtype(self, dtype, expected):
        # NumPy arrays: JAX makes float64 tensors only with x64 enabled.
        x = np.ones((2, 3), getattr(ml_dtypes, dtype, dtype))
        assert ssl_ops.loss_dtype(x) == expected
