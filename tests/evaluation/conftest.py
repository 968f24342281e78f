"""Shared data and reference helpers of the evaluation tests."""

import numpy as np


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def make_data(num_keys=23, num_queries=7, dim=5, num_classes=4, seed=0):
    """Clustered embeddings: the classes are learnable, not trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, num_keys).astype("int32")
    keys = centres[labels] + 0.8 * rng.normal(size=(num_keys, dim))
    query_labels = rng.integers(0, num_classes, num_queries).astype("int32")
    queries = centres[query_labels] + 0.8 * rng.normal(size=(num_queries, dim))
    return (
        keys.astype("float32"),
        labels,
        queries.astype("float32"),
        query_labels,
    )
