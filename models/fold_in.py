"""Fold-in: one exact WALS row solve against a cached Gramian, in numpy only.

Shared by ``models.wals.WALS.fold_in`` and the service, so a user folded in online gets the
same vector as offline. No torch here: the service imports this module.
"""

from __future__ import annotations

import numpy as np


def row_regularization(
    regularization: float,
    regularization_exp: float,
    n_observed: np.ndarray | int,
    n_cols: int,
    unobserved_weight: float,
) -> np.ndarray:
    """Per-row L2 strength: ``regularization * (n_observed + unobserved_weight * n_cols) ** exp``.

    ``exp = 0`` is TF WALS' constant lambda; ``exp = 1`` is the frequency-scaled
    regularization of Rendle et al. (2021) "Revisiting the performance of iALS".
    """
    n = np.asarray(n_observed, dtype=np.float64)
    if regularization_exp == 0.0:
        return np.full(n.shape, regularization, dtype=np.float64)
    return regularization * np.power(n + unobserved_weight * n_cols, regularization_exp)


def fold_in(
    item_factors: np.ndarray,
    gramian: np.ndarray,
    item_indices: np.ndarray,
    weights: np.ndarray,
    targets: np.ndarray,
    unobserved_weight: float,
    regularization: float,
) -> np.ndarray:
    """Solve one row of the WALS objective exactly.

    Minimises ``sum_j W_j (A_j - u.v_j)^2 + w0 * sum_{j unobserved} (u.v_j)^2 + lambda |u|^2``
    via ``(w0 G + lambda I + V_o^T diag(W - w0) V_o) u = V_o^T (W * A)``.

    Args:
        item_factors: (n_items, dim) float32, the fixed side V.
        gramian: (dim, dim) ``V^T V``, cached so fold-in never touches all items.
        item_indices: (n,) int indices of the observed items; duplicates are summed.
        weights: (n,) observed-entry weights W_j (> 0).
        targets: (n,) observed values A_j (1.0 for implicit positives).
        unobserved_weight: w0.
        regularization: lambda for this row (already frequency-scaled if wanted).

    Returns:
        (dim,) float32 user vector; zeros when ``item_indices`` is empty.
    """
    dim = item_factors.shape[1]
    if len(item_indices) == 0:
        return np.zeros(dim, dtype=np.float32)
    v = item_factors[item_indices].astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    a = np.asarray(targets, dtype=np.float64)
    lhs = unobserved_weight * gramian.astype(np.float64) + regularization * np.eye(dim)
    lhs += (v * (w - unobserved_weight)[:, None]).T @ v
    rhs = v.T @ (w * a)
    return np.linalg.solve(lhs, rhs).astype(np.float32)


def fold_in_batch(
    item_factors: np.ndarray,
    gramian: np.ndarray,
    indptr: np.ndarray,
    item_indices: np.ndarray,
    weights: np.ndarray,
    targets: np.ndarray,
    unobserved_weight: float,
    regularization: np.ndarray,
) -> np.ndarray:
    """Fold in many rows given in CSR form (``indptr`` of length n_rows + 1).

    ``regularization`` is (n_rows,). Returns (n_rows, dim) float32. The rows share the
    ``w0 G`` term, so each costs one dim x dim solve plus its own observed entries.
    """
    n_rows = len(indptr) - 1
    out = np.zeros((n_rows, item_factors.shape[1]), dtype=np.float32)
    for row in range(n_rows):
        sl = slice(indptr[row], indptr[row + 1])
        out[row] = fold_in(
            item_factors,
            gramian,
            item_indices[sl],
            weights[sl],
            targets[sl],
            unobserved_weight,
            float(regularization[row]),
        )
    return out
