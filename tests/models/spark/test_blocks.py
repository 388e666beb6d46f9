"""The sharded sets in plain numpy: initialisation, in-/out-blocks, per-row solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.core.fold_in import fold_in
from models.core.params import WALSParams
from models.spark.blocks import (
    block_edges,
    build_block,
    messages,
    solve_block,
)


def test_block_edges_cover_every_row_once():
    edges = block_edges(10, 4)
    assert edges[0] == 0 and edges[-1] == 10 and np.all(np.diff(edges) >= 2)
    assert len(block_edges(3, 8)) == 4  # never more blocks than rows


def _blocks(matrix: sp.csr_matrix, n_blocks: int, params: WALSParams):
    coo = matrix.tocoo()
    ue, ie = block_edges(matrix.shape[0], n_blocks), block_edges(matrix.shape[1], n_blocks)
    w = np.full(coo.nnz, 1.0 + params.unobserved_weight)

    def side(rows, cols, edges, other):
        out = []
        for b in range(len(edges) - 1):
            mine = (rows >= edges[b]) & (rows < edges[b + 1])
            out.append(
                build_block(
                    b, edges, other, rows[mine], cols[mine], coo.data[mine], w[mine], params
                )
            )
        return out

    return ue, ie, side(coo.row, coo.col, ue, ie), side(coo.col, coo.row, ie, ue)


def test_each_block_receives_exactly_the_factors_its_entries_need(tiny_matrix):
    """What item blocks send (their out-blocks) is what user blocks expect (their in-blocks):
    entry k of a user block sees the factor of its own item."""
    params = WALSParams(dim=3)
    ue, ie, users, items = _blocks(tiny_matrix, 3, params)
    factors = np.arange(tiny_matrix.shape[1] * 3, dtype=np.float32).reshape(-1, 3)
    inbox: dict[int, dict[int, np.ndarray]] = {}
    for block in items:
        local = factors[ie[block.index] : ie[block.index + 1]]
        for dest, (src, sent) in messages(block, local):
            inbox.setdefault(dest, {})[src] = sent
    for block in users:
        fixed = np.concatenate([inbox[block.index][int(s)] for s in block.sources])
        rows = np.repeat(np.arange(block.n_rows), np.diff(block.indptr))
        want = tiny_matrix[ue[block.index] : ue[block.index + 1]].tocoo()
        order = np.lexsort((want.col, want.row))
        np.testing.assert_array_equal(rows, want.row[order])
        np.testing.assert_array_equal(fixed[block.position], factors[want.col[order]])
        # and each factor crosses once per destination block, not once per entry
        assert len(fixed) == len(np.unique(want.col))


def test_solve_block_is_fold_in_row_by_row(tiny_matrix):
    params = WALSParams(dim=4, regularization=0.3, unobserved_weight=0.2)
    ue, ie, users, items = _blocks(tiny_matrix, 2, params)
    v = np.random.default_rng(0).normal(size=(tiny_matrix.shape[1], 4)).astype(np.float32)
    gram = v.astype(np.float64).T @ v
    block = users[1]
    received = {int(s): v[ie[s] : ie[s + 1]][items[s].out[block.index]] for s in block.sources}
    x, stats = solve_block(block, received, 0.2 * gram, 0.2)
    for local in range(block.n_rows):
        cols = tiny_matrix[ue[1] + local].indices
        want = fold_in(v, gram, cols, np.full(len(cols), 1.2), np.ones(len(cols)), 0.2, 0.3)
        np.testing.assert_allclose(x[local], want, rtol=1e-5, atol=1e-6)
    assert stats.gramian.shape == (4, 4) and stats.regularization > 0


def test_a_block_missing_a_sender_is_refused(tiny_matrix):
    params = WALSParams(dim=2)
    _, _, users, _ = _blocks(tiny_matrix, 2, params)
    with pytest.raises(ValueError, match="received nothing"):
        solve_block(users[0], {}, np.eye(2), 0.1)
