import math

import numpy as np
import pytest

from keras_ssl.evaluation import SoftNearestNeighbour
from keras_ssl.testing import TestCase
from tests.evaluation.conftest import cos
from tests.evaluation.conftest import make_data


def snn_reference(queries, keys, labels, num_classes, tau):
    """pi_d(z, z_S) of PAWS Appendix A, one query and key at a time."""
    out = np.zeros((len(queries), num_classes))
    for i, z in enumerate(queries):
        weights = [math.exp(cos(z, key) / tau) for key in keys]
        total = math.fsum(weights)
        for w, c in zip(weights, labels):
            out[i, c] += w / total
    return out


class TestSoftNearestNeighbour(TestCase):
    @pytest.mark.parametrize("chunk_size", [1, 5, 23, 100])
    @pytest.mark.parametrize("tau", [0.1, 0.5])
    def test_matches_reference(self, chunk_size, tau):
        keys, labels, queries, _ = make_data()
        snn = SoftNearestNeighbour(
            temperature=tau, num_classes=6, chunk_size=chunk_size, batch_size=3
        ).fit(keys, labels)
        probs = snn.predict_proba(queries)
        expected = snn_reference(queries, keys, labels, 6, tau)
        self.assertShape(probs, (7, 6))
        self.assertAllClose(probs, expected, atol=1e-5)
        np.testing.assert_array_equal(
            snn.predict(queries), np.argmax(expected, -1)
        )

    def test_chunked_equals_unchunked(self):
        # Far-apart logits (tau = 0.02): the streaming log-sum-exp must
        # rescale its running sums, not just add them up.
        keys, labels, queries, _ = make_data(num_keys=50, seed=3)
        whole = SoftNearestNeighbour(0.02, chunk_size=50).fit(keys, labels)
        chunked = SoftNearestNeighbour(0.02, chunk_size=7).fit(keys, labels)
        self.assertAllClose(
            chunked.predict_proba(queries),
            whole.predict_proba(queries),
            atol=1e-6,
        )
        assert np.all(np.isfinite(chunked.predict_proba(queries)))

    def test_evaluate(self):
        keys, labels, queries, query_labels = make_data(num_queries=40)
        snn = SoftNearestNeighbour(chunk_size=4).fit(keys, labels)
        expected = np.mean(
            np.argmax(snn_reference(queries, keys, labels, 4, 0.1), -1)
            == query_labels
        )
        assert 0.0 < expected < 1.0
        self.assertAllClose(snn.evaluate(queries, query_labels), expected)

    def test_validation(self):
        with pytest.raises(ValueError, match="temperature=0"):
            SoftNearestNeighbour(temperature=0)
        with pytest.raises(ValueError, match="chunk_size=0"):
            SoftNearestNeighbour(chunk_size=0)
        keys, labels, queries, _ = make_data()
        snn = SoftNearestNeighbour()
        with pytest.raises(ValueError, match="not fitted"):
            snn.predict(queries)
        with pytest.raises(ValueError, match="labels.shape"):
            snn.fit(keys, labels[:3])
        with pytest.raises(ValueError, match="num_classes=2"):
            SoftNearestNeighbour(num_classes=2).fit(keys, labels)
        with pytest.raises(ValueError, match="at least one"):
            snn.fit(keys[:0], labels[:0])
        snn.fit(keys, labels)
        with pytest.raises(ValueError, match="dim of the fitted"):
            snn.predict(queries[:, :3])

    def test_large_labeled_set(self):
        # 120k labeled embeddings in 15 chunks; NumPy float64 reference.
        rng = np.random.default_rng(7)
        keys = rng.normal(size=(120_000, 8)).astype("float32")
        labels = rng.integers(0, 10, len(keys)).astype("int32")
        queries = rng.normal(size=(5, 8)).astype("float32")
        probs = SoftNearestNeighbour(0.1).fit(keys, labels)
        probs = probs.predict_proba(queries)
        k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        logits = (q.astype("float64") @ k.T.astype("float64")) / 0.1
        weights = np.exp(logits - logits.max(1, keepdims=True))
        expected = weights @ np.eye(10)[labels]
        expected /= expected.sum(1, keepdims=True)
        self.assertAllClose(probs, expected, atol=1e-5)
