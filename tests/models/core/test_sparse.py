from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.core.sparse import csr_row


def test_rows_of_a_scipy_matrix():
    m = sp.csr_matrix(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 1]]))
    assert csr_row(m, 0).tolist() == [1, 2]
    assert csr_row(m, 1).tolist() == []
    assert csr_row(m, 2).tolist() == [0, 2]
