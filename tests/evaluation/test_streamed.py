import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ssl.evaluation import streamed_accuracy
from keras_ssl.evaluation import streamed_embeddings
from keras_ssl.evaluation import streamed_knn_accuracy
from keras_ssl.evaluation.streamed import top_k_hits
from keras_ssl.testing import TestCase
from tests.evaluation.conftest import make_data
from tests.evaluation.test_knn import knn_reference


def _reference_hits(scores, labels, k):
    """Top-k hits from a full sort, ties broken against the label."""
    hits = 0
    for row, label in zip(np.asarray(scores, np.float64), labels):
        # Stable sort of -score with the label placed after its ties.
        order = sorted(range(len(row)), key=lambda c: (-row[c], c == label))
        hits += label in order[:k]
    return hits


def _batches(x, y, batch_size):
    ids = np.arange(len(y))
    return tf.data.Dataset.from_tensor_slices((x, y, ids)).batch(batch_size)


class TestTopK(TestCase):
    def test_hits_match_a_sort(self):
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(30, 7))
        labels = rng.integers(0, 7, 30)
        for k in (1, 2, 5):
            assert top_k_hits(scores, labels, (k,))[k] == _reference_hits(
                scores, labels, k
            )

    def test_ties_count_against_the_label(self):
        votes = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]])
        assert top_k_hits(votes, [1, 3], (1, 2, 3)) == {1: 0, 2: 1, 3: 1}


class TestStreamedAccuracy(TestCase):
    @pytest.mark.parametrize("batch_size", [1, 4, 7])
    def test_matches_whole_array_reference(self, batch_size):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(23, 5)).astype("float32")
        y = rng.integers(0, 8, 23).astype("int32")
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8)])
        logits = model.predict(x, verbose=0)
        result = streamed_accuracy(model, _batches(x, y, batch_size))
        assert result["examples"] == 23
        for k in (1, 5):
            expected = _reference_hits(logits, y, k) / 23
            assert result[f"top{k}"] == pytest.approx(expected)

    def test_dict_output_and_errors(self):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, {"logits": keras.layers.Dense(4)(inputs)})
        x = np.eye(3, dtype="float32")
        y = np.array([0, 1, 2], "int32")
        result = streamed_accuracy(
            model, _batches(x, y, 2), top_k=(1,), output="logits"
        )
        assert set(result) == {"top1", "examples"}
        with pytest.raises(ValueError, match="output=None"):
            streamed_accuracy(model, _batches(x, y, 2))
        with pytest.raises(ValueError, match="top_k"):
            streamed_accuracy(model, _batches(x, y, 2), top_k=(0,))
        with pytest.raises(ValueError, match="no images"):
            streamed_accuracy(model, _batches(x, y, 2).take(0))


class TestStreamedKNN(TestCase):
    @pytest.mark.parametrize("k, tau", [(1, 0.1), (5, 0.1), (5, None)])
    def test_matches_reference(self, k, tau):
        keys, labels, queries, query_labels = make_data()
        identity = keras.Sequential(
            [keras.Input((5,)), keras.layers.Identity()]
        )
        features, bank_labels = streamed_embeddings(
            identity, _batches(keys, labels, 6)
        )
        self.assertAllClose(features, keys)
        np.testing.assert_array_equal(bank_labels, labels)
        result = streamed_knn_accuracy(
            identity,
            _batches(keys, labels, 6),
            _batches(queries, query_labels, 3),
            k=k,
            temperature=tau,
            num_classes=4,
            top_k=(1, 2),
        )
        votes = knn_reference(queries, keys, labels, 4, k, tau)
        for top in (1, 2):
            expected = _reference_hits(votes, query_labels, top) / 7
            assert result[f"top{top}"] == pytest.approx(expected)
