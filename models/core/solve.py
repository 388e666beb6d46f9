"""The one row solver of the WALS normal equations, in numpy.

Each row i of the side being solved minimises
``sum_j W_ij (A_ij - x_i.v_j)^2 + w0 sum_{j unobserved} (x_i.v_j)^2 + lambda_i |x_i|^2``,
whose normal equations are ``(w0 V^T V + lambda_i I + V_i^T diag(W - w0) V_i) x_i =
V_i^T (W * A)_i``. Fold-in solves one row, the Spark blocks many; the torch solvers of
``models.wals`` build the same systems batched on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ObservedSums:
    """The observed entries' part of each row's system: ``sum_j (W - w0) v_j v_j^T`` and
    ``sum_j W A v_j``, rows in CSR order."""

    matrices: np.ndarray  # (n_rows, dim, dim)
    rhs: np.ndarray  # (n_rows, dim) float64


def observed_sums(
    factors: np.ndarray, indptr: np.ndarray, excess_weight: np.ndarray, weighted_target: np.ndarray
) -> ObservedSums:
    """Sums over each row's entries; ``factors[k]`` is entry k's fixed-side factor row.
    The products run in ``factors``' dtype (float32 as torch's solvers, float64 for a
    fold-in), one small BLAS product per row: padding rows into one batched product
    measured 1.5x slower, the long rows dominate."""
    n_rows, dim = len(indptr) - 1, factors.shape[1]
    matrices = np.zeros((n_rows, dim, dim))
    rhs = np.zeros((n_rows, dim))
    excess = excess_weight.astype(factors.dtype)
    for row in range(n_rows):
        a, b = indptr[row] - indptr[0], indptr[row + 1] - indptr[0]
        if a < b:
            v = factors[a:b]
            matrices[row] = (v * excess[a:b, None]).T @ v
            rhs[row] = weighted_target[a:b] @ v
    return ObservedSums(matrices, rhs)


def solve_rows(
    sums: ObservedSums, w0_gramian: np.ndarray, regularization: np.ndarray
) -> np.ndarray:
    """(n_rows, dim) float32 solutions, solved in float64; ``w0_gramian`` is ``w0 V^T V``
    over all of the fixed side, ``regularization`` each row's lambda."""
    lhs = row_matrices(sums, w0_gramian, regularization)
    return np.linalg.solve(lhs, sums.rhs[:, :, None])[:, :, 0].astype(np.float32)


def row_matrices(
    sums: ObservedSums, w0_gramian: np.ndarray, regularization: np.ndarray
) -> np.ndarray:
    """(n_rows, dim, dim) float64 left-hand sides: observed part + w0 V^T V + lambda I."""
    dim = w0_gramian.shape[0]
    lhs = sums.matrices + w0_gramian.astype(np.float64)
    diagonal = np.arange(dim)
    lhs[:, diagonal, diagonal] += np.asarray(regularization, dtype=np.float64).reshape(-1, 1)
    return lhs
