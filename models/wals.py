"""Weighted alternating least squares (WALS) on implicit feedback.

The objective is TensorFlow's ``WALSModel``, exactly::

    sum_ij W_ij (A_ij - u_i . v_j)^2 + lambda (|U|^2 + |V|^2)

with ``W_ij = w0 + r_i c_j`` on observed entries (or a caller-given weight) and ``w0``
(``unobserved_weight``) on every unobserved entry, whose target is 0. The dense matrix is never
built: the ``w0`` part of every row's normal equations is the shared Gramian ``w0 V^T V``.

``WALS`` is the model: its parameters, factors and Gramian, fold-in, recommendations and its
files. Fitting runs ``models.wals_solver.Solver`` (one torch code path for the CPU and CUDA,
``models.device.pick_torch_device``), which holds one fit's sparse data and no factors: the
model takes the factors when the fit ends (or the best ones seen, with early stopping).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from models.core.fold_in import fold_in_user, weights_from_counts
from models.core.glorot import glorot
from models.core.params import WALSParams
from models.core.sparse import csr_row
from models.core.topk import top_k
from models.device import pick_torch_device
from models.metrics import ranking_metrics
from models.wals_solver import Solver

log = logging.getLogger(__name__)


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

    def record(
        self,
        iteration: int,
        factors: tuple[np.ndarray, np.ndarray],
        train: sp.csr_matrix,
        validation: sp.csr_matrix,
        history: FitHistory,
    ) -> float:
        """The iteration's validation recall of ``factors`` (user, item), kept when best."""
        recall = recall_at(*factors, train, validation, self.k)
        history.validation_recall.append(recall)
        if self.factors is None or recall > self.recall:
            self.recall, self.since = recall, 0
            # Copies: on the CPU, a tensor's numpy() shares its memory.
            self.factors = (factors[0].copy(), factors[1].copy())
            history.best_iteration = iteration
        else:
            self.since += 1
        return recall

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
        initial_user_factors: np.ndarray | None = None,
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
            initial_user_factors: a warm start, (n_users, dim): rows not NaN replace those
                users' random start (the first half-step solves the items from them).
        """
        matrix = _check_csr(matrix, "matrix")
        weights_csr = self._observed_weights(matrix, weights)
        validation = _same_shape(validation, matrix, "validation")
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        dev = pick_torch_device(self.device)
        solver = Solver(self.params, self.chunk_bytes, self.block_bytes)
        users_side, items_side = solver.sides(matrix, weights_csr, dev)
        n_users, n_items = matrix.shape
        user_f, item_f = self._start(n_users, n_items, initial_user_factors, dev)
        self.history = FitHistory()
        best = _Best(early_stopping_patience, validation_k)
        for it in range(self.params.iterations):
            start = time.perf_counter()
            item_f = solver.half_step(items_side, item_f, user_f)
            user_f = solver.half_step(users_side, user_f, item_f)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            self.history.seconds.append(time.perf_counter() - start)
            loss, recall = self._measure(
                it, solver, (users_side, items_side), (user_f, item_f), (matrix, validation), best
            )
            log.info("iteration %d loss %.6g recall %s", it, loss, recall)
            if callback is not None:
                callback(it, loss, recall)
            if best.exhausted():
                log.info("early stop after iteration %d", it)
                break
        if self.params.iterations and not self.calculate_training_loss:
            self.history.loss.append(solver.loss(users_side, items_side, user_f, item_f))
        self.user_factors, self.item_factors = user_f.cpu().numpy(), item_f.cpu().numpy()
        if best.factors is not None and early_stopping_patience:
            self.user_factors, self.item_factors = best.factors
        self.set_item_factors(self.item_factors)
        return self

    def _start(
        self, n_users: int, n_items: int, initial: np.ndarray | None, dev: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Glorot factors (users first, then items, from one seed), with ``initial``'s rows."""
        seed, dim = self.params.seed, self.params.dim
        users = warm(glorot(seed, n_users, dim), initial)
        items = glorot(seed, n_items, dim, skip=n_users * dim)
        return torch.from_numpy(users).to(dev), torch.from_numpy(items).to(dev)

    def _measure(
        self,
        iteration: int,
        solver: Solver,
        sides: tuple[Any, Any],
        factors: tuple[torch.Tensor, torch.Tensor],
        data: tuple[sp.csr_matrix, sp.csr_matrix | None],
        best: _Best,
    ) -> tuple[float, float | None]:
        """After a sweep: the loss when asked for every iteration, and the validation
        recall of the sweep's factors (the best kept by ``best``). The model's own factors
        are untouched until the fit ends."""
        loss = math.nan
        if self.calculate_training_loss:
            loss = solver.loss(*sides, *factors)
            self.history.loss.append(loss)
        matrix, validation = data
        if validation is None:
            return loss, None
        arrays = (factors[0].cpu().numpy(), factors[1].cpu().numpy())
        return loss, best.record(iteration, arrays, matrix, validation, self.history)

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
        return recall_at(self.user_factors, self.item_factors, train, test, k)

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


def warm(start: np.ndarray, given: np.ndarray | None) -> np.ndarray:
    """``start`` with the rows of ``given`` that are not NaN in their place."""
    if given is None:
        return start
    if given.shape != start.shape:
        raise ValueError(f"initial factors {given.shape}, expected {start.shape}")
    known = ~np.isnan(given).any(axis=1)
    start[known] = given[known]
    return start


def recall_at(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int,
) -> float:
    """Mean recall@k of these factors (training items excluded) over users with held-out
    items, normalised by min(k, |test|)."""
    return ranking_metrics(user_factors, item_factors, train, test, (k,))[f"recall@{k}"]


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
