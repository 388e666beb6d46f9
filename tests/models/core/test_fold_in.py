"""Fold-in against a dense brute-force solve of the same objective."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.fold_in import fold_in, row_regularization, weights_from_counts


def dense_solution(v, items, weights, targets, w0, lam):
    """argmin_u sum_j W_j (a_j - u.v_j)^2 + w0 sum_unobserved (u.v_j)^2 + lam |u|^2, on every
    column, built densely."""
    n, dim = v.shape
    w = np.full(n, w0)
    a = np.zeros(n)
    w[items] = weights
    a[items] = targets
    lhs = (v * w[:, None]).T @ v + lam * np.eye(dim)
    return np.linalg.solve(lhs, (v * w[:, None]).T @ a)


def test_fold_in_equals_the_dense_solution_with_uneven_weights():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 5))
    items = np.array([1, 7, 9, 30])
    weights = np.array([1.5, 3.0, 0.7, 9.0])
    targets = np.array([1.0, 1.0, 0.5, 2.0])
    got = fold_in(
        v.astype(np.float32),
        (v.T @ v).astype(np.float32),
        items,
        weights,
        targets,
        unobserved_weight=0.1,
        regularization=0.3,
    )
    want = dense_solution(v, items, weights, targets, 0.1, 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_weight_schemes_and_regularization():
    counts = np.array([0, 1, 4])
    assert weights_from_counts(counts, "uniform", 2.0).tolist() == [2.0, 2.0, 2.0]
    assert weights_from_counts(counts, "linear", 2.0).tolist() == [0.0, 2.0, 0.5]
    np.testing.assert_allclose(weights_from_counts(counts, "power", 1.0, 0.5), [0.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        weights_from_counts(counts, "other", 1.0)  # type: ignore[arg-type]
    assert row_regularization(0.1, 0.0, np.array([3]), 10, 0.5).tolist() == [0.1]
    np.testing.assert_allclose(row_regularization(0.1, 1.0, np.array([3]), 10, 0.5), [0.8])
