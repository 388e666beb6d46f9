"""Fold-in: one exact WALS row solve against a cached Gramian, in numpy only.

Shared by ``models.wals.WALS.fold_in`` and the service, so a user folded in online gets the
same vector as offline. No torch here: the service imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.core.params import WALSParams, WeightScheme
from models.core.solve import observed_sums, row_matrices, solve_rows


def weights_from_counts(
    counts: np.ndarray, scheme: WeightScheme, scale: float = 1.0, exponent: float = 0.08
) -> np.ndarray:
    """Row or column weights from interaction counts, as in Google's WALS tutorial.

    ``uniform``: ``scale`` everywhere. ``linear``: ``scale / count`` (the tutorial's
    LINEAR_RATINGS). ``power``: ``scale * count ** -exponent`` (its LOG_RATINGS). Zero counts
    get weight 0. Returns float64 of the same shape as ``counts``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if scheme == "uniform":
        return np.full(counts.shape, scale, dtype=np.float64)
    safe = np.where(counts > 0, counts, 1.0)
    if scheme == "linear":
        out = scale / safe
    elif scheme == "power":
        out = scale * np.power(safe, -exponent)
    else:
        raise ValueError(f"unknown weight scheme {scheme!r}: use uniform, linear or power")
    return np.where(counts > 0, out, 0.0)


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
    """Solve one row of the WALS objective exactly (``models.core.solve``), in float64.

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
    if len(item_indices) == 0:
        return np.zeros(item_factors.shape[1], dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    sums = observed_sums(
        item_factors[item_indices].astype(np.float64),
        np.array([0, len(item_indices)]),
        w - unobserved_weight,
        w * np.asarray(targets, dtype=np.float64),
    )
    w0_gramian = unobserved_weight * gramian.astype(np.float64)
    return np.asarray(solve_rows(sums, w0_gramian, np.array([regularization]))[0])


def fold_in_user(
    item_factors: np.ndarray,
    gramian: np.ndarray,
    col_weights: np.ndarray,
    params: WALSParams,
    item_indices: np.ndarray | list[int],
    weights: np.ndarray | list[float] | None = None,
    targets: np.ndarray | list[float] | None = None,
) -> np.ndarray:
    """A new user's vector (dim,) with the weights and regularization WALS trained with.

    ``params`` are the fitted model's; ``col_weights`` the fitted c_j. Without weights or
    targets, duplicate indices count once. Raises ``ValueError`` on indices out of range.
    """
    row = user_row(item_factors, col_weights, params, item_indices, weights, targets)
    w0 = params.unobserved_weight
    return fold_in(item_factors, gramian, row.items, row.weights, row.targets, w0, row.reg)


@dataclass(frozen=True)
class UserRow:
    """One user's row of the WALS objective: distinct items, W_j, A_j and lambda."""

    items: np.ndarray
    weights: np.ndarray
    targets: np.ndarray
    reg: float


def user_row(
    item_factors: np.ndarray,
    col_weights: np.ndarray,
    params: WALSParams,
    item_indices: np.ndarray | list[int],
    weights: np.ndarray | list[float] | None = None,
    targets: np.ndarray | list[float] | None = None,
) -> UserRow:
    """The row ``fold_in_user`` solves, with the weights and lambda WALS trained with."""
    n_items = item_factors.shape[0]
    idx = np.asarray(item_indices, dtype=np.int64).reshape(-1)
    if weights is None and targets is None:
        idx = np.unique(idx)  # a repeated item is one interaction, not a heavier one
    if idx.size and (idx.min() < 0 or idx.max() >= n_items):
        raise ValueError(f"item indices must lie in [0, {n_items}), got {idx.min()}..{idx.max()}")
    w0 = params.unobserved_weight
    if weights is None:
        row_w = weights_from_counts(
            np.array([len(idx)]), params.row_weights, params.weight_scale, params.weight_exponent
        )[0]
        w = w0 + row_w * col_weights[idx]
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    a = np.ones(len(idx)) if targets is None else np.asarray(targets, dtype=np.float64).reshape(-1)
    if w.shape != idx.shape or a.shape != idx.shape:
        raise ValueError("weights and targets must have one value per distinct item index")
    reg = row_regularization(
        params.regularization, params.regularization_exp, len(idx), n_items, w0
    )
    return UserRow(idx, w, a, float(reg))


def contributions(
    item_factors: np.ndarray,
    gramian: np.ndarray,
    col_weights: np.ndarray,
    params: WALSParams,
    item_indices: np.ndarray,
    targets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(items, c)``: each distinct history item, and c[i, j], history item j's part of
    the WALS score of ``targets[i]`` (a (m, dim) block of served item factors) for the user
    ``fold_in_user`` solves from ``item_indices``. The solve is u = A^-1 b with
    b = sum_j W_j A_j v_j, so t_i . u = sum_j W_j A_j t_i A^-1 v_j exactly: the terms sum
    to the score (implicit's ``explain`` splits it the same way)."""
    row = user_row(item_factors, col_weights, params, item_indices)
    w0 = params.unobserved_weight
    v = item_factors[row.items].astype(np.float64)
    sums = observed_sums(v, np.array([0, len(row.items)]), row.weights - w0, row.weights)
    lhs = row_matrices(sums, w0 * gramian.astype(np.float64), np.array([row.reg]))[0]
    solved = np.linalg.solve(lhs, v.T)  # (dim, n): A^-1 v_j
    scale = row.weights * row.targets
    return row.items, (np.asarray(targets, dtype=np.float64) @ solved) * scale
