import math

import numpy as np
import pytest

from keras_ssl.evaluation import KNNClassifier
from keras_ssl.testing import TestCase
from tests.evaluation.conftest import cos
from tests.evaluation.conftest import make_data


def knn_reference(queries, keys, labels, num_classes, k, tau):
    """Weighted k-NN votes (InstDisc §3.4), one query at a time."""
    out = np.zeros((len(queries), num_classes))
    k = min(k, len(keys))
    for i, z in enumerate(queries):
        sims = np.array([cos(z, key) for key in keys])
        for j in np.argsort(-sims)[:k]:
            out[i, labels[j]] += 1.0 if tau is None else math.exp(sims[j] / tau)
    return out


class TestKNNClassifier(TestCase):
    @pytest.mark.parametrize("chunk_size", [2, 9, 23])
    @pytest.mark.parametrize("k, tau", [(1, 0.1), (5, 0.1), (5, None)])
    def test_matches_reference(self, chunk_size, k, tau):
        keys, labels, queries, _ = make_data()
        knn = KNNClassifier(
            k=k, temperature=tau, chunk_size=chunk_size, batch_size=4
        ).fit(keys, labels)
        expected = knn_reference(queries, keys, labels, 4, k, tau)
        self.assertAllClose(knn.scores(queries), expected, rtol=1e-5)
        self.assertAllClose(
            knn.predict_proba(queries),
            expected / expected.sum(-1, keepdims=True),
            atol=1e-6,
        )
        np.testing.assert_array_equal(
            knn.predict(queries), np.argmax(expected, -1)
        )

    def test_k_larger_than_labeled_set(self):
        # Default k = 200 with 23 labeled examples: all of them vote.
        keys, labels, queries, _ = make_data()
        knn = KNNClassifier(chunk_size=10).fit(keys, labels)
        expected = knn_reference(queries, keys, labels, 4, 23, 0.1)
        self.assertAllClose(knn.scores(queries), expected, rtol=1e-5)

    def test_chunked_equals_unchunked(self):
        keys, labels, queries, query_labels = make_data(num_keys=60, seed=5)
        whole = KNNClassifier(k=7, chunk_size=60).fit(keys, labels)
        chunked = KNNClassifier(k=7, chunk_size=4).fit(keys, labels)
        self.assertAllClose(
            chunked.scores(queries), whole.scores(queries), rtol=1e-5
        )
        assert chunked.evaluate(queries, query_labels) == whole.evaluate(
            queries, query_labels
        )

    def test_validation(self):
        with pytest.raises(ValueError, match="k=0"):
            KNNClassifier(k=0)
        with pytest.raises(ValueError, match="temperature=-1"):
            KNNClassifier(temperature=-1)
        with pytest.raises(ValueError, match="batch_size=0"):
            KNNClassifier(batch_size=0)
        keys, labels, _, _ = make_data()
        with pytest.raises(ValueError, match="integer class ids"):
            KNNClassifier().fit(keys, labels.astype("float32"))
