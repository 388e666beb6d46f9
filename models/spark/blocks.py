"""The sharded sets of Spark WALS, in numpy: blocks of rows, what they need, how they solve.

Rows (users, or items) are cut into contiguous ranges, the blocks. Each half-step solves one
side's blocks against the other side's fixed factors, exchanged as in Spark's own ALS
(Das et al., the "in-block / out-block" scheme): a fixed-side block sends each of its factors
once to every block that has an entry in that column (its *out-block* lists them), never once
per rating; the solving block (its *in-block*) knows where each of its entries' factors sit in
what it receives. Every function here is plain numpy, so the rules are tested without Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from models.core.fold_in import row_regularization
from models.core.params import WALSParams
from models.core.solve import observed_sums, solve_rows

# Rows whose normal equations are built and solved together: 1,024 x dim^2 float64.
SOLVE_CHUNK = 1024


def block_edges(n_rows: int, n_blocks: int) -> np.ndarray:
    """Block b holds rows ``edges[b]:edges[b + 1]``: contiguous, sizes within one."""
    n_blocks = max(1, min(n_blocks, n_rows))
    return np.linspace(0, n_rows, n_blocks + 1).astype(np.int64)


def block_of(index: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, index, side="right") - 1


@dataclass
class Block:
    """One block of the side being solved: its in-block and out-block.

    In-block: entries of rows ``start..start+n_rows`` in CSR order (``indptr``); entry k's
    fixed factor is row ``position[k]`` of the concatenation of what ``sources`` send, in
    ascending source order (``source_sizes`` rows each). Out-block: ``out[d]`` lists the local
    rows whose factors this block sends to block d of the other side.
    """

    index: int
    start: int
    n_rows: int
    indptr: np.ndarray
    position: np.ndarray
    excess_weight: np.ndarray  # W - w0
    weighted_target: np.ndarray  # W * A
    regularization: np.ndarray  # (n_rows,) lambda_i
    sources: np.ndarray
    source_sizes: np.ndarray
    out: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def nnz(self) -> int:
        return len(self.position)


def build_block(
    index: int,
    row_edges: np.ndarray,
    col_edges: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    params: WALSParams,
) -> Block:
    """The block ``index`` of a side from all its entries (global row and column indices)."""
    start, stop = int(row_edges[index]), int(row_edges[index + 1])
    n_rows, n_cols = stop - start, int(col_edges[-1])
    local = rows - start
    col_block = block_of(cols, col_edges)
    order = np.lexsort((cols, local))
    local, cols, col_block = local[order], cols[order], col_block[order]
    targets, weights = targets[order], weights[order]
    counts = np.bincount(local, minlength=n_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # What each source block sends here: its distinct columns, ascending; the same rule
    # decides the out-block of the source (``out_rows``), so both sides agree.
    position = np.empty(len(cols), dtype=np.int64)
    sources = np.unique(col_block)
    sizes = np.zeros(len(sources), dtype=np.int64)
    offset = 0
    for n, s in enumerate(sources):
        mask = col_block == s
        needed, inverse = np.unique(cols[mask], return_inverse=True)
        position[mask] = offset + inverse
        sizes[n] = len(needed)
        offset += len(needed)
    w0 = params.unobserved_weight
    return Block(
        index=index,
        start=start,
        n_rows=n_rows,
        indptr=indptr,
        position=position,
        excess_weight=weights - w0,
        weighted_target=weights * targets,
        regularization=row_regularization(
            params.regularization, params.regularization_exp, counts, n_cols, w0
        ),
        sources=sources.astype(np.int64),
        source_sizes=sizes,
        out=out_rows(local, cols, col_edges),
    )


def out_rows(
    local_rows: np.ndarray, cols: np.ndarray, col_edges: np.ndarray
) -> dict[int, np.ndarray]:
    """For each block d of the other side: the distinct local rows with an entry in d,
    ascending: the factors this block sends to d."""
    dest = block_of(cols, col_edges)
    return {int(d): np.unique(local_rows[dest == d]) for d in np.unique(dest)}


def messages(block: Block, factors: np.ndarray) -> list[tuple[int, tuple[int, np.ndarray]]]:
    """``(destination block, (this block, factors it needs))`` for every destination."""
    return [(d, (block.index, factors[rows])) for d, rows in block.out.items()]


@dataclass
class Stats:
    """What a solved block adds to the objective and the next half-step."""

    gramian: np.ndarray  # X^T X of the new factors, float64
    regularization: float  # sum_i lambda_i |x_i|^2
    observed: float  # sum_obs W (A - x.v)^2 - w0 (x.v)^2, against the factors received

    def __add__(self, other: Stats) -> Stats:
        return Stats(
            self.gramian + other.gramian,
            self.regularization + other.regularization,
            self.observed + other.observed,
        )


def solve_block(
    block: Block,
    received: Mapping[int, np.ndarray],
    w0_gramian: np.ndarray,
    unobserved_weight: float,
) -> tuple[np.ndarray, Stats]:
    """Every row's exact solution of ``(w0 G + lambda_i I + V_i^T diag(W - w0) V_i) x_i =
    V_i^T (W * A)_i``: the observed sums in float32 and the solve in float64, returned as
    float32, as the single-machine exact solver does; and the
    block's share of the objective (computed as ``models.wals.WALS._loss`` does)."""
    dim = w0_gramian.shape[0]
    missing = [int(s) for s in block.sources if int(s) not in received]
    if missing:
        raise ValueError(f"block {block.index} received nothing from blocks {missing}")
    parts = [np.asarray(received[int(s)], dtype=np.float32) for s in block.sources]
    for s, size, part in zip(block.sources, block.source_sizes, parts, strict=True):
        if part.shape != (size, dim):
            raise ValueError(f"block {block.index}: block {s} sent {part.shape}, not {(size, dim)}")
    fixed = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    x = np.zeros((block.n_rows, dim), dtype=np.float32)
    observed = 0.0
    # Chunks of rows: their entries' factors are gathered once per chunk (never all of the
    # block's at once: nnz x dim would be half a gigabyte per million entries).
    for lo in range(0, block.n_rows, SOLVE_CHUNK):
        hi = min(block.n_rows, lo + SOLVE_CHUNK)
        first, last = block.indptr[lo], block.indptr[hi]
        weighted = block.weighted_target[first:last]
        sums = observed_sums(
            fixed[block.position[first:last]],  # float32 products, as torch's solvers
            block.indptr[lo : hi + 1],
            block.excess_weight[first:last],
            weighted,
        )
        x[lo:hi] = solve_rows(sums, w0_gramian, block.regularization[lo:hi])
        # The chunk's sum_obs W (A - x.v)^2 - w0 (x.v)^2 without a prediction per entry:
        # sum W A^2 - 2 x.rhs + x^T (sum (W - w0) v v^T) x, with the float32 x returned.
        xc = x[lo:hi].astype(np.float64)
        weight = block.excess_weight[first:last] + unobserved_weight
        observed += float(
            np.sum(weighted * weighted / weight)
            - 2.0 * np.einsum("ij,ij->", xc, sums.rhs)
            + np.einsum("ni,nij,nj->", xc, sums.matrices, xc)
        )
    x64 = x.astype(np.float64)
    reg = float(block.regularization @ np.einsum("ij,ij->i", x64, x64))
    return x, Stats(x64.T @ x64, reg, observed)
