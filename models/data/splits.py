"""Evaluation splits, all seeded and all returning matrices of the full users x items shape.

- ``holdout_split``: per-user random holdout of a fraction of each user's positives (weak
  generalisation: the model has seen every user and every item).
- ``user_split``: held-out users (strong generalisation): their rows are empty in ``train``;
  part of each is given back as ``fold_in`` history, the rest is ``test``.
- ``cold_item_split``: items whose every interaction is held out, so only text can find them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Split:
    """``train`` to fit on, ``test`` to score against; ``fold_in`` rows are the history of
    held-out users (user split only); ``cold_items`` the held-out items (cold split only)."""

    name: str
    train: sp.csr_matrix
    test: sp.csr_matrix
    fold_in: sp.csr_matrix | None = None
    cold_items: np.ndarray | None = None

    @property
    def held_out_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def _partition(matrix: sp.csr_matrix, masks: list[np.ndarray]) -> list[sp.csr_matrix]:
    """One matrix of ``matrix``'s shape per boolean mask over its stored entries (CSR order)."""
    coo = matrix.tocoo()
    return [
        sp.csr_matrix(
            (coo.data[m], (coo.row[m], coo.col[m])), shape=matrix.shape, dtype=matrix.dtype
        )
        for m in masks
    ]


def holdout_split(matrix: sp.csr_matrix, fraction: float = 0.2, seed: int = 0) -> Split:
    """Hold out ``round(fraction * n)`` positives of each user with n >= 2 (at least one stays)."""
    _check_fraction(fraction)
    rng = np.random.default_rng(seed)
    counts = np.diff(matrix.indptr)
    test_mask = np.zeros(matrix.nnz, dtype=bool)
    for user in np.flatnonzero(counts >= 2):
        n = counts[user]
        n_test = min(n - 1, max(1, round(fraction * n)))
        pick = rng.choice(n, size=n_test, replace=False)
        test_mask[matrix.indptr[user] + pick] = True
    train, test = _partition(matrix, [~test_mask, test_mask])
    return Split("holdout", train, test)


def user_split(
    matrix: sp.csr_matrix, user_fraction: float = 0.1, fold_in_fraction: float = 0.5, seed: int = 0
) -> Split:
    """Hold out whole users; of each, ``fold_in_fraction`` of positives become history."""
    _check_fraction(user_fraction)
    _check_fraction(fold_in_fraction)
    rng = np.random.default_rng(seed)
    counts = np.diff(matrix.indptr)
    eligible = np.flatnonzero(counts >= 2)
    n_held = max(1, round(user_fraction * len(eligible)))
    held = rng.choice(eligible, size=n_held, replace=False)
    row_of = np.repeat(np.arange(matrix.shape[0]), counts)
    held_mask = np.isin(row_of, held)
    history_mask = np.zeros(matrix.nnz, dtype=bool)
    for user in held:
        n = counts[user]
        n_hist = min(n - 1, max(1, round(fold_in_fraction * n)))
        history_mask[matrix.indptr[user] + rng.choice(n, size=n_hist, replace=False)] = True
    train, fold_in, test = _partition(
        matrix, [~held_mask, held_mask & history_mask, held_mask & ~history_mask]
    )
    return Split("users", train, test, fold_in=fold_in)


def cold_item_split(matrix: sp.csr_matrix, item_fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold out every interaction of a random ``item_fraction`` of the items with any."""
    _check_fraction(item_fraction)
    rng = np.random.default_rng(seed)
    with_data = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1]) > 0)
    n_cold = max(1, round(item_fraction * len(with_data)))
    cold = np.sort(rng.choice(with_data, size=n_cold, replace=False))
    cold_mask = np.isin(matrix.indices, cold)
    train, test = _partition(matrix, [~cold_mask, cold_mask])
    return Split("cold_items", train, test, cold_items=cold)


def _check_fraction(value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"split fractions must lie strictly between 0 and 1, got {value}")
