"""Glorot-uniform initial factors: one definition, for WALS on torch and on Spark."""

from __future__ import annotations

import math

import numpy as np


def glorot_rows(
    seed: int, n_rows: int, dim: int, start: int, stop: int, skip: int = 0
) -> np.ndarray:
    """Rows ``start:stop`` of ``glorot(seed, n_rows, dim, skip)``, bit for bit, without
    drawing the rows before them: PCG64 jumps ahead by the draws it skips (one 64-bit draw
    per uniform double).
    WALS draws the users, then the items (``skip = n_users * dim``)."""
    limit = math.sqrt(6.0 / (n_rows + dim))
    bits = np.random.PCG64(seed)
    bits.advance(int(skip) + int(start) * dim)
    return (
        np.random.Generator(bits)
        .uniform(-limit, limit, size=(int(stop) - int(start), dim))
        .astype(np.float32)
    )


def glorot(seed: int, n_rows: int, dim: int, skip: int = 0) -> np.ndarray:
    """(n_rows, dim) float32 uniform in +-sqrt(6 / (n_rows + dim)), drawn from
    ``default_rng(seed)`` after ``skip`` draws."""
    return glorot_rows(seed, n_rows, dim, 0, n_rows, skip)
