"""Weighted alternating least squares (WALS) on implicit feedback.

The objective is TensorFlow's ``WALSModel``, exactly::

    sum_ij W_ij (A_ij - u_i . v_j)^2 + lambda (|U|^2 + |V|^2)

with ``W_ij = w0 + r_i c_j`` on observed entries (or a caller-given weight) and ``w0``
(``unobserved_weight``) on every unobserved entry, whose target is 0. The dense matrix is never
built: the ``w0`` part of every row's normal equations is the shared Gramian ``w0 V^T V``.

One torch code path serves the CPU and CUDA (``models.device.pick_torch_device``). Rows are
solved all at once: ``cg`` runs a batched conjugate gradient warm-started from the current
factors (as implicit's ``cg_steps``), ``cholesky`` builds and factors every row's system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from models.core.fold_in import fold_in_user, row_regularization, weights_from_counts
from models.core.glorot import glorot
from models.core.params import WALSParams
from models.core.sparse import csr_row
from models.core.topk import top_k
from models.device import pick_torch_device
from models.metrics import ranking_metrics

log = logging.getLogger(__name__)


@dataclass
class _Block:
    """Observed entries whose columns lie in ``[col_start, col_stop)``, as a CSR."""

    crow: torch.Tensor  # int32: torch's CPU CSR kernels run about 1.5x faster than int64
    col: torch.Tensor  # int32, relative to col_start
    col_start: int
    col_stop: int
    offset: int  # where this block's entries start in the side's entry order


@dataclass
class _Side:
    """One half-step's sparse data on the device: rows to solve, columns fixed.

    Entries are stored block by block (columns cut into ranges) so that each sparse product
    only gathers a slice of the fixed factors small enough to stay in cache: on 100k users x
    64 dims the item half-step's product runs about 5x faster with 8 blocks than with one.
    Every per-entry tensor below is in this block-major order.
    """

    shape: tuple[int, int]
    blocks: list[_Block]
    excess_weight: torch.Tensor  # W_ij - w0 on observed entries
    weighted_target: torch.Tensor  # W_ij * A_ij
    regularization: torch.Tensor  # (n_rows,) lambda_i
    # Predictions u_i . v_j are computed fastest in the layout whose fixed side is smaller;
    # when that is the other side's, compute there and permute with ``from_other``.
    other: _Side | None = None
    from_other: torch.Tensor | None = None


@dataclass
class FitHistory:
    """What ``fit`` measured, one entry per iteration."""

    loss: list[float] = field(default_factory=list)  # every iteration's, or only the last
    seconds: list[float] = field(default_factory=list)
    validation_recall: list[float] = field(default_factory=list)
    best_iteration: int | None = None


@dataclass
class _Best:
    """Early stopping: the best validation recall so far, its factors, and the patience."""

    patience: int
    k: int  # recall@k
    recall: float = -math.inf
    since: int = 0
    factors: tuple[np.ndarray, np.ndarray] | None = None

    def record(self, iteration: int, recall: float, model: WALS) -> None:
        if self.factors is None or recall > self.recall:
            self.recall, self.since = recall, 0
            self.factors = (model.user_factors.copy(), model.item_factors.copy())
            model.history.best_iteration = iteration
        else:
            self.since += 1

    def exhausted(self) -> bool:
        return bool(self.patience) and self.since >= self.patience


class WALS:
    """WALS matrix factorisation with the public surface of benfred/implicit's ALS.

    Args:
        params: the hyper-parameters (``models.core.params.WALSParams``, their one
            definition); keyword arguments of the same names override them, so
            ``WALS(dim=32, regularization=0.01)`` reads as implicit's ``ALS(factors=32, ...)``.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_threads: torch intra-op threads on the CPU; 0 keeps torch's default.
        calculate_training_loss: compute the objective after every iteration (as implicit's
            flag of that name; it costs about a fifth of an iteration). Off, only the final
            loss is computed and the callback gets NaN for the others.
        chunk_bytes, block_bytes: memory bounds of the solves and the sparse products.

    ``iterations`` sweep items, then users, so the users are solved last against the final
    item factors and ``fold_in`` of a training user reproduces its row.
    """

    def __init__(
        self,
        params: WALSParams | None = None,
        *,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        num_threads: int = 0,
        calculate_training_loss: bool = False,
        chunk_bytes: int = 256 << 20,
        block_bytes: int = 3 << 20,
        **overrides: Any,
    ) -> None:
        self.params = dataclasses.replace(params or WALSParams(), **overrides).as_params()
        self.device = device
        self.num_threads = num_threads
        self.calculate_training_loss = calculate_training_loss
        self.chunk_bytes = chunk_bytes
        self.block_bytes = block_bytes
        dim = self.params.dim
        self.user_factors: np.ndarray = np.zeros((0, dim), dtype=np.float32)
        self.item_factors: np.ndarray = np.zeros((0, dim), dtype=np.float32)
        self.item_gramian: np.ndarray = np.zeros((dim, dim), dtype=np.float32)
        self.col_weight_values: np.ndarray = np.zeros(0, dtype=np.float64)
        self.history = FitHistory()

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        matrix: sp.spmatrix,
        weights: sp.spmatrix | None = None,
        *,
        validation: sp.spmatrix | None = None,
        validation_k: int = 20,
        early_stopping_patience: int = 0,
        callback: Callable[[int, float, float | None], None] | None = None,
    ) -> WALS:
        """Learn ``user_factors`` (n_users, dim) and ``item_factors`` (n_items, dim).

        Args:
            matrix: CSR users x items of observed targets A_ij (1.0 for implicit positives).
            weights: optional CSR of observed-entry weights W_ij on the same pattern; else
                ``w0 + r_i c_j`` from ``row_weights``/``col_weights``.
            validation: optional CSR users x items of held-out positives; recall@k on it
                is recorded every iteration (training items excluded).
            early_stopping_patience: with ``validation``, stop after this many iterations
                without a better recall and keep the best factors (0: never stop early).
            callback: called as ``callback(iteration, loss, validation_recall)``.
        """
        matrix = _check_csr(matrix, "matrix")
        weights_csr = self._observed_weights(matrix, weights)
        validation = _same_shape(validation, matrix, "validation")
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        dev = pick_torch_device(self.device)
        users_side, items_side = self._sides(matrix, weights_csr, dev)
        n_users, n_items = matrix.shape
        seed, dim = self.params.seed, self.params.dim
        user_f = torch.from_numpy(glorot(seed, n_users, dim)).to(dev)
        item_f = torch.from_numpy(glorot(seed, n_items, dim, skip=n_users * dim)).to(dev)
        self.history = FitHistory()
        best = _Best(early_stopping_patience, validation_k)
        sides = (users_side, items_side)
        for it in range(self.params.iterations):
            start = time.perf_counter()
            item_f = self._half_step(items_side, item_f, user_f)
            user_f = self._half_step(users_side, user_f, item_f)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            self.history.seconds.append(time.perf_counter() - start)
            loss, recall = self._measure(it, sides, (user_f, item_f), (matrix, validation), best)
            log.info("iteration %d loss %.6g recall %s", it, loss, recall)
            if callback is not None:
                callback(it, loss, recall)
            if best.exhausted():
                log.info("early stop after iteration %d", it)
                break
        if self.params.iterations and not self.calculate_training_loss:
            self.history.loss.append(self._loss(users_side, items_side, user_f, item_f))
        self.user_factors, self.item_factors = user_f.cpu().numpy(), item_f.cpu().numpy()
        if best.factors is not None and early_stopping_patience:
            self.user_factors, self.item_factors = best.factors
        self.set_item_factors(self.item_factors)
        return self

    def _measure(
        self,
        iteration: int,
        sides: tuple[_Side, _Side],
        factors: tuple[torch.Tensor, torch.Tensor],
        data: tuple[sp.csr_matrix, sp.csr_matrix | None],
        best: _Best,
    ) -> tuple[float, float | None]:
        """After a sweep: the loss when asked for every iteration, and the validation
        recall (with the best factors kept) when there is a validation set."""
        loss = math.nan
        if self.calculate_training_loss:
            loss = self._loss(*sides, *factors)
            self.history.loss.append(loss)
        matrix, validation = data
        if validation is None:
            return loss, None
        self.user_factors, self.item_factors = (f.cpu().numpy() for f in factors)
        recall = self.validation_recall(matrix, validation, best.k)
        self.history.validation_recall.append(recall)
        best.record(iteration, recall, self)
        return loss, recall

    def _sides(
        self, matrix: sp.csr_matrix, weights_csr: sp.csr_matrix, dev: torch.device
    ) -> tuple[_Side, _Side]:
        """Both half-steps' sparse data on the device, and the permutation that lets one
        side's predictions serve the other."""
        n_users, n_items = matrix.shape
        # One transpose: item-major entry k is user-major entry by_item[k]; the items side's
        # targets and weights are gathered through it rather than transposed again.
        numbered = sp.csr_matrix(
            (np.arange(matrix.nnz, dtype=np.int64), matrix.indices, matrix.indptr), matrix.shape
        )
        transposed = numbered.T.tocsr()
        by_item = transposed.data
        users_side, users_order = self._side(
            matrix.indptr, matrix.indices, matrix.data, weights_csr.data, n_items, dev
        )
        items_side, items_order = self._side(
            transposed.indptr,
            transposed.indices,
            matrix.data[by_item],
            weights_csr.data[by_item],
            n_users,
            dev,
        )
        # Predictions are computed in the layout whose fixed side is smaller, then permuted.
        if n_users >= n_items:
            items_side.other = users_side
            perm = _inverse(users_order)[by_item[items_order]]
            items_side.from_other = torch.from_numpy(perm).to(dev)
        else:
            users_side.other = items_side
            perm = _inverse(items_order)[_inverse(by_item)[users_order]]
            users_side.from_other = torch.from_numpy(perm).to(dev)
        return users_side, items_side

    def set_item_factors(self, item_factors: np.ndarray) -> None:
        """Item factors and the Gramian fold-in solves against (``fold_in``)."""
        self.item_factors = item_factors
        self.item_gramian = (item_factors.T.astype(np.float64) @ item_factors).astype(np.float32)

    def _observed_weights(
        self, matrix: sp.csr_matrix, weights: sp.spmatrix | None
    ) -> sp.csr_matrix:
        w0 = self.params.unobserved_weight
        n_users, n_items = matrix.shape
        self.col_weight_values = weights_from_counts(
            np.bincount(matrix.indices, minlength=n_items),
            self.params.col_weights,
            self.params.weight_scale,
            self.params.weight_exponent,
        )
        if weights is not None:
            weights = _check_csr(weights, "weights")
            if weights.shape != matrix.shape or not (
                np.array_equal(weights.indptr, matrix.indptr)
                and np.array_equal(weights.indices, matrix.indices)
            ):
                raise ValueError("weights must be a CSR matrix with the same pattern as matrix")
            if np.any(weights.data <= 0):
                raise ValueError("weights must be > 0 on every observed entry")
            return weights
        row_w = weights_from_counts(
            np.diff(matrix.indptr),
            self.params.row_weights,
            self.params.weight_scale,
            self.params.weight_exponent,
        )
        rows = np.repeat(np.arange(n_users), np.diff(matrix.indptr))
        data = w0 + row_w[rows] * self.col_weight_values[matrix.indices]
        return sp.csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape)

    def _side(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
        n_cols: int,
        dev: torch.device,
    ) -> tuple[_Side, np.ndarray]:
        """The side's tensors and ``order``: block-major position k holds CSR entry order[k]."""
        n_rows = len(indptr) - 1
        counts = np.diff(indptr)
        reg = row_regularization(
            self.params.regularization,
            self.params.regularization_exp,
            counts,
            n_cols,
            self.params.unobserved_weight,
        )
        n_blocks = 1
        if self.params.solver == "cg" and dev.type == "cpu":
            n_blocks = max(1, math.ceil(n_cols * self.params.dim * 4 / self.block_bytes))
        edges = np.linspace(0, n_cols, n_blocks + 1).astype(np.int64)
        rows = np.repeat(np.arange(n_rows, dtype=np.int32), counts)
        # Small unsigned keys make numpy's stable argsort a radix sort: linear time.
        key = np.uint8 if n_blocks <= 256 else np.uint16 if n_blocks <= 65536 else np.int64
        block_of = np.repeat(np.arange(n_blocks, dtype=key), np.diff(edges))[indices]
        if n_blocks == 1:
            order = np.arange(len(indices))
        else:
            order = np.argsort(block_of, kind="stable")
            rows = rows[order]
        cols = indices[order]
        starts = np.concatenate([[0], np.cumsum(np.bincount(block_of, minlength=n_blocks))])
        blocks = []
        for b in range(n_blocks):
            lo, hi = int(starts[b]), int(starts[b + 1])
            crow = np.zeros(n_rows + 1, dtype=np.int32)
            np.cumsum(np.bincount(rows[lo:hi], minlength=n_rows), out=crow[1:])
            blocks.append(
                _Block(
                    crow=torch.from_numpy(crow).to(dev),
                    col=torch.from_numpy((cols[lo:hi] - edges[b]).astype(np.int32)).to(dev),
                    col_start=int(edges[b]),
                    col_stop=int(edges[b + 1]),
                    offset=lo,
                )
            )
        w = weights[order]
        side = _Side(
            shape=(n_rows, n_cols),
            blocks=blocks,
            excess_weight=torch.from_numpy(
                (w - self.params.unobserved_weight).astype(np.float32)
            ).to(dev),
            weighted_target=torch.from_numpy((w * targets[order]).astype(np.float32)).to(dev),
            regularization=torch.from_numpy(reg.astype(np.float32)).to(dev),
        )
        return side, order

    @staticmethod
    def _block_csr(side: _Side, block: _Block, values: torch.Tensor) -> torch.Tensor:
        size = block.col.shape[0]
        with warnings.catch_warnings():
            # CSR support is "beta" in torch; we rely only on sampled_addmm and CSR @ dense.
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                block.crow,
                block.col,
                values[block.offset : block.offset + size],
                (side.shape[0], block.col_stop - block.col_start),
                check_invariants=False,
            )

    def _spmm(
        self, side: _Side, values: torch.Tensor, fixed: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """Add ``sum_j values_ij fixed_j`` to every row of ``out`` (n_rows, dim), in place."""
        for block in side.blocks:
            out.addmm_(
                self._block_csr(side, block, values), fixed[block.col_start : block.col_stop]
            )
        return out

    def _predict(self, side: _Side, x: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """``x_i . fixed_j`` on every observed entry, in ``side``'s entry order."""
        if side.other is not None and side.from_other is not None:
            return self._predict(side.other, fixed, x)[side.from_other]
        parts = [
            torch.sparse.sampled_addmm(
                self._block_csr(side, block, side.excess_weight),
                x,
                fixed[block.col_start : block.col_stop].T,
                beta=0.0,
            ).values()
            for block in side.blocks
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _apply(
        self,
        side: _Side,
        x: torch.Tensor,
        fixed: torch.Tensor,
        w0_gram: torch.Tensor,
        minus: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every row's normal-equation matrix times its vector, (n_rows, dim).

        With ``minus`` (the observed ``W * A``) it returns the residual ``b - M x`` instead,
        sharing one sparse product between right-hand side and matrix.
        """
        values = self._predict(side, x, fixed).mul_(side.excess_weight)
        out = torch.addmm(side.regularization[:, None] * x, x, w0_gram)
        if minus is None:
            return self._spmm(side, values, fixed, out)
        return self._spmm(side, torch.sub(minus, values), fixed, out.neg_())

    def _half_step(self, side: _Side, x: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        w0_gram = self.params.unobserved_weight * (fixed.T @ fixed)
        if self.params.solver == "cholesky":
            rhs = self._spmm(side, side.weighted_target, fixed, torch.zeros_like(x))
            return self._cholesky(side, fixed, w0_gram, rhs)
        # Batched CG, warm-started from x; updates in place: rows are large (n_rows, dim).
        x = x.clone()
        r = self._apply(side, x, fixed, w0_gram, minus=side.weighted_target)
        p = r.clone()
        rs_old = torch.linalg.vecdot(r, r)
        tiny = torch.finfo(x.dtype).tiny
        for _ in range(self.params.cg_steps):
            ap = self._apply(side, p, fixed, w0_gram)
            denom = torch.linalg.vecdot(p, ap)
            alpha = torch.where(denom > tiny, rs_old / denom.clamp_min(tiny), 0.0)[:, None]
            x.addcmul_(alpha, p)
            r.addcmul_(alpha, ap, value=-1.0)
            rs_new = torch.linalg.vecdot(r, r)
            beta = torch.where(rs_old > tiny, rs_new / rs_old.clamp_min(tiny), 0.0)
            p.mul_(beta[:, None]).add_(r)
            rs_old = rs_new
        return x

    def _cholesky(
        self, side: _Side, fixed: torch.Tensor, w0_gram: torch.Tensor, rhs: torch.Tensor
    ) -> torch.Tensor:
        n_rows, dim = rhs.shape
        out = torch.empty_like(rhs)
        (block,) = side.blocks  # the exact solver keeps one block: plain CSR order
        crow = block.crow.cpu().numpy()
        # Each observed entry adds a dim x dim outer product: bound the entries per chunk.
        max_nnz = max(1, self.chunk_bytes // (4 * dim * dim))
        start = 0
        eye = torch.eye(dim, device=rhs.device, dtype=rhs.dtype)
        while start < n_rows:
            stop = int(np.searchsorted(crow, crow[start] + max_nnz, side="right")) - 1
            stop = min(n_rows, max(stop, start + 1))
            lo, hi = int(crow[start]), int(crow[stop])
            v = fixed[block.col[lo:hi].long()]
            w = side.excess_weight[lo:hi]
            local_rows = torch.repeat_interleave(
                torch.arange(stop - start, device=rhs.device),
                (block.crow[start + 1 : stop + 1] - block.crow[start:stop]).long(),
            )
            lhs = w0_gram.expand(stop - start, dim, dim).clone()
            lhs += side.regularization[start:stop, None, None] * eye
            lhs.index_add_(0, local_rows, (v * w[:, None])[:, :, None] * v[:, None, :])
            chol = torch.linalg.cholesky(lhs.double())
            out[start:stop] = torch.cholesky_solve(rhs[start:stop, :, None].double(), chol)[
                ..., 0
            ].to(rhs.dtype)
            start = stop
        return out

    def _loss(
        self, users: _Side, items: _Side, user_f: torch.Tensor, item_f: torch.Tensor
    ) -> float:
        """The full objective, computed without the dense matrix."""
        w0 = self.params.unobserved_weight
        f64 = torch.float64
        pred = self._predict(users, user_f, item_f)
        weight = users.excess_weight + w0
        residual = users.weighted_target / weight - pred
        # float32 terms, float64 sums: exact enough, and no float64 copy of every entry.
        observed = (weight * residual * residual).sum(dtype=f64) - w0 * (pred * pred).sum(dtype=f64)
        uu = user_f.T.double() @ user_f.double()
        vv = item_f.T.double() @ item_f.double()
        unobserved = w0 * (uu * vv).sum()
        reg = torch.dot(users.regularization.double(), torch.linalg.vecdot(user_f, user_f).double())
        reg += torch.dot(
            items.regularization.double(), torch.linalg.vecdot(item_f, item_f).double()
        )
        return float(observed + unobserved + reg)

    # ------------------------------------------------------------------ inference
    def fold_in(
        self,
        item_indices: np.ndarray | list[int],
        weights: np.ndarray | list[float] | None = None,
        targets: np.ndarray | list[float] | None = None,
    ) -> np.ndarray:
        """User vector (dim,) for a user who interacted with ``item_indices``.

        One exact solve against the cached item Gramian, as TF's ``project_row_factors``
        and implicit's ``recalculate_user``. ``weights`` default to ``w0 + r c_j`` with the
        fitted schemes; ``targets`` to 1.0.
        """
        if self.item_factors.shape[0] == 0:
            raise RuntimeError("fit or load the model before fold_in")
        return fold_in_user(
            self.item_factors,
            self.item_gramian,
            self.col_weight_values,
            self.params,
            item_indices,
            weights,
            targets,
        )

    def fold_in_batch(self, matrix: sp.spmatrix, weights: sp.spmatrix | None = None) -> np.ndarray:
        """Fold in every row of a CSR users x items matrix; (n_rows, dim). As in ``fit``,
        ``matrix`` holds the targets and ``weights`` the optional observed-entry weights."""
        matrix = _check_csr(matrix, "matrix")
        weights_csr = None if weights is None else _check_csr(weights, "weights")
        out = np.zeros((matrix.shape[0], self.params.dim), dtype=np.float32)
        for row in range(matrix.shape[0]):
            items = csr_row(matrix, row)
            if len(items):
                row_weights = None if weights_csr is None else weights_csr[row].data
                out[row] = self.fold_in(items, row_weights, matrix[row].data)
        return out

    def recommend(
        self, user_vector: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` item indices and scores for one user vector (dim,)."""
        scores = self.item_factors @ user_vector
        if exclude is not None and len(exclude):
            scores = scores.copy()
            scores[exclude] = -np.inf
        top = top_k(scores, k)
        return top, scores[top]

    def validation_recall(self, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 20) -> float:
        """Mean recall@k (normalised by min(k, |test|)) over users with held-out items."""
        return ranking_metrics(self.user_factors, self.item_factors, train, test, (k,))[
            f"recall@{k}"
        ]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write factors (.npy), Gramian and parameters (JSON) into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "user_factors.npy", self.user_factors)
        np.save(path / "item_factors.npy", self.item_factors)
        np.save(path / "item_gramian.npy", self.item_gramian)
        np.save(path / "col_weights.npy", self.col_weight_values)
        meta = {"params": self.params.to_dict(), "history": self.history.__dict__}
        (path / "wals.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> WALS:
        """Inverse of ``save``; ``mmap`` memory-maps the user factors."""
        path = Path(path)
        meta = json.loads((path / "wals.json").read_text())
        model = cls(WALSParams.from_mapping(meta["params"]))
        model.user_factors = np.load(path / "user_factors.npy", mmap_mode="r" if mmap else None)
        model.item_factors = np.load(path / "item_factors.npy")
        model.item_gramian = np.load(path / "item_gramian.npy")
        model.col_weight_values = np.load(path / "col_weights.npy")
        model.history = FitHistory(**meta["history"])
        return model


def _inverse(permutation: np.ndarray) -> np.ndarray:
    """The inverse permutation, in linear time (an argsort would sort)."""
    out = np.empty_like(permutation)
    out[permutation] = np.arange(len(permutation), dtype=permutation.dtype)
    return out


def _same_shape(matrix: sp.spmatrix | None, like: sp.csr_matrix, name: str) -> sp.csr_matrix | None:
    if matrix is None:
        return None
    csr = _check_csr(matrix, name)
    if csr.shape != like.shape:
        raise ValueError(f"{name} has shape {csr.shape}, expected {like.shape}")
    return csr


def _check_csr(matrix: Any, name: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got {type(matrix)}")
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    csr.sum_duplicates()
    csr.sort_indices()
    if not np.all(np.isfinite(csr.data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return csr
