"""Rows of a CSR structure, for scipy matrices and the bundle's raw arrays alike."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class CSR(Protocol):
    """Anything with CSR's ``indptr`` and ``indices``: a scipy CSR matrix, the seen lists."""

    @property
    def indptr(self) -> np.ndarray: ...

    @property
    def indices(self) -> np.ndarray: ...


def csr_row(matrix: CSR, row: int) -> np.ndarray:
    """Column indices stored in ``row`` of ``matrix``."""
    return np.asarray(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]])
