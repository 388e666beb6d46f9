"""Rows of a CSR structure, for scipy matrices and the bundle's raw arrays alike."""

from __future__ import annotations

from typing import Any

import numpy as np


def csr_row(matrix: Any, row: int) -> np.ndarray:
    """Column indices stored in ``row`` of anything with ``indptr`` and ``indices`` (a scipy
    CSR matrix, or the bundle's seen lists)."""
    return np.asarray(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]])
