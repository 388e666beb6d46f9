"""The candidate pools of a batch of requests: one rule for the service, evaluation and head
training.

A request's pool is the first ``n_wals`` items of its WALS ranking and the first ``n_text``
of its text ranking that are not excluded (at least ``k`` from each, so a large ``k`` is met
from the rankings before popular items fill in), in that order; each item carries its rank
in every source that found it (the head sees both).

The searches are planned once per batch (``plan``) and run by whoever holds the indexes, one
``SearchBatch`` per index: FAISS in the service, ``ExactSearch`` offline. Rows whose index
answered with fewer allowed items than their pool needs (padding, or exclusions beyond the
first fetch) are searched again with twice the ``k``, together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.core.topk import top_k
from models.core.types import SOURCES, Pool, Request, SearchBatch, Searcher

EXACT_CHUNK = 1024
"""Rows of one exact-search matrix product: bounds its (rows x items) score matrix."""


def usable(vector: np.ndarray | None) -> bool:
    return vector is not None and bool(np.any(vector))


def search_vectors(request: Request) -> dict[str, np.ndarray]:
    """Which vector each index is searched with: the user vector for WALS; the query, or
    without one the user's text profile, for text."""
    out = {}
    if request.user_vector is not None and usable(request.user_vector):
        out["wals"] = request.user_vector
    text = request.query_vector if usable(request.query_vector) else request.profile_vector
    if text is not None and usable(text):
        out["text"] = text
    return out


def pool_sizes(request: Request, n_wals: int, n_text: int) -> dict[str, int]:
    """Allowed items each ranking contributes: ``n`` for the source, at least ``k``."""
    return {"wals": max(n_wals, request.k), "text": max(n_text, request.k)}


@dataclass
class IndexPlan:
    """The searches of one index for a batch: which requests, with what, for how many."""

    rows: np.ndarray  # request positions in the batch
    vectors: np.ndarray  # (m, dim)
    sizes: np.ndarray  # (m,) allowed items each row's pool takes from this index
    excluded: list[np.ndarray]  # (m,) each row's excluded ids, sorted
    inside: np.ndarray  # (m,) bool: the index drops the excluded ids itself
    k: np.ndarray  # (m,) results asked for

    def batch(self, rows: np.ndarray) -> SearchBatch:
        return SearchBatch(
            self.vectors[rows],
            self.k[rows],
            [self.excluded[r] if self.inside[r] else None for r in rows.tolist()],
        )


def plan(
    requests: Sequence[Request], n_items: int, n_wals: int, n_text: int, filtering: frozenset[str]
) -> dict[str, IndexPlan]:
    """The first searches of every request, by index name. Fetching ``n`` plus the number of
    excluded items finds ``n`` allowed ones whenever the index answers in full. An index in
    ``filtering`` can drop excluded ids inside the search (FAISS's ``IDSelector``): a request
    excluding more items than its pool holds asks it to, for just the pool's size, so its work
    stops growing with how much the user has seen."""
    vectors = [search_vectors(r) for r in requests]
    excluded = [np.unique(r.exclude) for r in requests]
    out = {}
    for name in SOURCES:
        rows = np.array([i for i, v in enumerate(vectors) if name in v], dtype=np.int64)
        if not len(rows):
            continue
        sizes = np.array([pool_sizes(requests[i], n_wals, n_text)[name] for i in rows])
        n_excluded = np.array([len(excluded[i]) for i in rows])
        inside = (n_excluded > sizes) & (name in filtering)
        k = np.minimum(np.where(inside, sizes, sizes + n_excluded), n_items)
        out[name] = IndexPlan(
            rows,
            np.stack([vectors[i][name] for i in rows]),
            sizes,
            [excluded[i] for i in rows],
            inside,
            k,
        )
    return out


def allowed(ids: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """The ids of one ranking that a pool may take, in order: no padding, nothing excluded."""
    ids = ids[ids >= 0]
    return ids[~np.isin(ids, excluded, assume_unique=False)]


def run_plan(searcher: Searcher, name: str, p: IndexPlan, n_items: int) -> list[np.ndarray]:
    """Each planned row's allowed ranking, searching again (twice the k, the short rows
    together) until it holds the row's pool size or the whole index was asked for."""
    rankings: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(p.rows)
    pending = np.arange(len(p.rows))
    while len(pending):
        ids = searcher.search(name, p.batch(pending))
        short = []
        for found, r in zip(ids, pending.tolist(), strict=True):
            rankings[r] = allowed(found[: p.k[r]], p.excluded[r])
            if len(rankings[r]) < p.sizes[r] and p.k[r] < n_items:
                p.k[r] = min(2 * p.k[r], n_items)
                short.append(r)
        pending = np.array(short, dtype=np.int64)
    return rankings


def pool(rankings: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> Pool:
    """The first ``sizes[name]`` items of each allowed ranking, with their ranks there."""
    out: Pool = {}
    for name in SOURCES:
        if name in rankings:
            for rank, item in enumerate(rankings[name][: sizes[name]].tolist()):
                out.setdefault(item, {})[name] = rank
    return out


def candidate_pools(
    requests: Sequence[Request], n_items: int, searcher: Searcher, n_wals: int, n_text: int
) -> list[Pool]:
    """Every request's pool: planned once, each index searched once per round."""
    rankings: list[dict[str, np.ndarray]] = [{} for _ in requests]
    for name, p in plan(requests, n_items, n_wals, n_text, searcher.filtering).items():
        for row, ranking in zip(p.rows.tolist(), run_plan(searcher, name, p, n_items), strict=True):
            rankings[row][name] = ranking
    return [
        pool(found, pool_sizes(request, n_wals, n_text))
        for found, request in zip(rankings, requests, strict=True)
    ]


class ExactSearch:
    """Exact inner-product search over in-memory matrices: the ``Searcher`` used offline
    (evaluation, head training). It drops excluded ids inside the search."""

    def __init__(self, matrices: Mapping[str, np.ndarray]) -> None:
        self.matrices = dict(matrices)
        self.filtering = frozenset(self.matrices)

    def search(self, name: str, batch: SearchBatch) -> np.ndarray:
        matrix = self.matrices[name]
        k = min(int(batch.k.max(initial=0)), len(matrix))
        out = np.full((len(batch.vectors), k), -1, dtype=np.int64)
        for start in range(0, len(batch.vectors), EXACT_CHUNK):
            rows = slice(start, start + EXACT_CHUNK)
            scores = batch.vectors[rows] @ matrix.T
            for row, excluded in enumerate(batch.exclude[rows]):
                if excluded is not None:
                    scores[row, excluded] = -np.inf
            top = top_k(scores, k)
            out[rows] = np.where(np.isfinite(np.take_along_axis(scores, top, -1)), top, -1)
        return out
