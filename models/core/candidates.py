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

A request with a filter (``Request.allowed``) is searched among the items it allows,
exclusions taken out: by an exact ranking of those items here when at most
``EXACT_BELOW`` pass (a restrictive filter is cheaper to score in full than to search for,
and an ANN search under a restrictive filter is where filtered search loses items); inside
the index (FAISS's ``IDSelectorBitmap``) when fewer than ``SELECTOR_BELOW`` of the items
pass; else by an unfiltered search for about 1 / share as many, the filter applied to what
comes back. A filtered search that still answers short is redone exactly: the pool holds
its full size whenever that many items pass. Rows sharing a filter (the same mask) share
their FAISS call and their exact ranking's gather.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.core.topk import top_k
from models.core.types import SOURCES, ItemTables, Pool, Request, SearchBatch, Searcher

EXACT_CHUNK = 1024
"""Rows of one exact-search matrix product: bounds its (rows x items) score matrix."""

SELECTOR_BELOW = 0.3
"""A filter passing less than this share of the items is applied inside the index (an
``IDSelectorBitmap``); one passing more is applied to an unfiltered search for about
1 / share as many results: a selector slows every list it scans by more than the extra
results cost (docs/benchmarks.md, "Filters")."""

EXACT_BELOW = 32768
"""A filter passing at most this many items is searched exactly over them, their vectors
gathered once for the batch's requests sharing the filter: cheaper than an ANN search that
must skip most of what it visits whenever a few requests share the filter, and exact
(docs/benchmarks.md, "Filters")."""


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
    inside: np.ndarray  # (m,) bool: the index drops the excluded ids / applies the filter
    k: np.ndarray  # (m,) results asked for
    filters: list[np.ndarray | None]  # (m,) each row's filter mask (shared among requests)
    passing: list[int | None]  # (m,) items a filtered row may get: its filter less exclusions

    def batch(self, rows: np.ndarray) -> SearchBatch:
        """A filtered row asks the index for its filter alone (rows sharing a filter can
        share a call) and drops its exclusions from what comes back."""
        picked = rows.tolist()
        return SearchBatch(
            self.vectors[rows],
            self.k[rows],
            [
                self.excluded[r] if self.inside[r] and self.filters[r] is None else None
                for r in picked
            ],
            [self.filters[r] if self.inside[r] else None for r in picked],
        )


def eligible_mask(request: Request, n_items: int) -> np.ndarray:
    """The (n_items,) bool mask of the items a request may get: those its filter allows
    (all, without one), exclusions taken out. A fresh array the caller may change."""
    if request.allowed is None:
        mask = np.ones(n_items, dtype=bool)
    else:
        mask = np.array(request.allowed, dtype=bool, copy=True)
    mask[in_range(request.exclude, n_items)] = False
    return mask


def in_range(ids: np.ndarray, n_items: int) -> np.ndarray:
    return ids[(ids >= 0) & (ids < n_items)]


def passing_count(allowed: np.ndarray, excluded: np.ndarray) -> int:
    """Items a filter allows that the request does not exclude (``excluded`` unique)."""
    inside = in_range(excluded, len(allowed))
    return int(np.count_nonzero(allowed)) - int(np.count_nonzero(allowed[inside]))


def plan(
    requests: Sequence[Request], n_items: int, n_wals: int, n_text: int, filtering: frozenset[str]
) -> dict[str, IndexPlan]:
    """The first searches of every request, by index name. Fetching ``n`` plus the number of
    excluded items finds ``n`` allowed ones whenever the index answers in full. An index in
    ``filtering`` can drop excluded ids inside the search (FAISS's ``IDSelector``): a request
    excluding more items than its pool holds asks it to, for just the pool's size, so its work
    stops growing with how much the user has seen. A filtered request asks it to apply the
    filter, for the pool's size plus the excluded items the filter allows; an index that
    cannot filter is asked for more in proportion to how few items pass."""
    vectors = [search_vectors(r) for r in requests]
    excluded = [np.unique(r.exclude) for r in requests]
    passing = [
        None if r.allowed is None else passing_count(r.allowed, e)
        for r, e in zip(requests, excluded, strict=True)
    ]
    out = {}
    for name in SOURCES:
        rows = np.array([i for i, v in enumerate(vectors) if name in v], dtype=np.int64)
        if not len(rows):
            continue
        sizes = np.array([pool_sizes(requests[i], n_wals, n_text)[name] for i in rows])
        n_excluded = np.array([len(excluded[i]) for i in rows])
        filtered = np.array([passing[i] is not None for i in rows])
        selective = np.array(
            [passing[i] is not None and passing[i] < SELECTOR_BELOW * n_items for i in rows],
            dtype=bool,
        )
        inside = (((n_excluded > sizes) & ~filtered) | selective) & (name in filtering)
        k = np.where(inside & ~filtered, sizes, sizes + n_excluded)
        for j, i in enumerate(rows.tolist()):
            if passing[i] is not None and not inside[j]:  # a quarter more than expected
                k[j] = 5 * k[j] * n_items // (4 * max(passing[i], 1)) + 1
        out[name] = IndexPlan(
            rows,
            np.stack([vectors[i][name] for i in rows]),
            sizes,
            [excluded[i] for i in rows],
            inside,
            np.minimum(k, n_items),
            [requests[i].allowed for i in rows],
            [passing[i] for i in rows],
        )
    return out


def allowed(ids: np.ndarray, excluded: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The ids of one ranking that a pool may take, in order: no padding, nothing excluded,
    nothing a filter's ``mask`` leaves out."""
    ids = ids[ids >= 0]
    ids = ids[~np.isin(ids, excluded, assume_unique=False)]
    return ids if mask is None else ids[mask[ids]]


def exact_among(matrix: np.ndarray, p: IndexPlan, rows: list[int]) -> list[np.ndarray]:
    """Rows sharing one filter, each ranked exactly among the items it allows less the
    row's exclusions (ties by id): the passing items' vectors are gathered once for all."""
    ids = np.flatnonzero(np.asarray(p.filters[rows[0]], dtype=bool))
    block = matrix if 4 * len(ids) > len(matrix) else np.take(matrix, ids, axis=0)
    out = []
    step = max(1, EXACT_CHUNK * 4096 // max(len(ids), 1))  # bounds the (rows x items) block
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        scores = p.vectors[chunk].astype(matrix.dtype) @ block.T
        if block is matrix:
            scores = scores[:, ids]
        for row, r in zip(scores, chunk, strict=True):
            gone = np.searchsorted(ids, p.excluded[r])
            hit = gone < len(ids)
            gone = gone[hit][ids[gone[hit]] == p.excluded[r][hit]]
            row[gone] = -np.inf
            top = top_k(row, int(p.sizes[r]))
            out.append(ids[top[np.isfinite(row[top])]])
    return out


def run_plan(searcher: Searcher, name: str, p: IndexPlan, matrix: np.ndarray) -> list[np.ndarray]:
    """Each planned row's allowed ranking, searching again (twice the k, the short rows
    together) until it holds the row's pool size or the whole index was asked for. A
    filtered row passing few items, or still short after a filtered search, is ranked
    exactly among the items it allows, together with the rows sharing its filter."""
    n_items = len(matrix)
    rankings: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(p.rows)
    exact = [n is not None and n <= EXACT_BELOW for n in p.passing]
    pending = np.array([r for r in range(len(p.rows)) if not exact[r]], dtype=np.int64)
    while len(pending):
        ids = searcher.search(name, p.batch(pending))
        short = []
        for found, r in zip(ids, pending.tolist(), strict=True):
            rankings[r] = allowed(found[: p.k[r]], p.excluded[r], p.filters[r])
            n = p.passing[r]
            if len(rankings[r]) >= min(p.sizes[r], n_items if n is None else n):
                continue
            if n is not None and (p.inside[r] or p.k[r] >= n_items):
                exact[r] = True  # the filtered search missed items that pass: rank them all
            elif p.k[r] < n_items:
                p.k[r] = min(2 * p.k[r], n_items)
                short.append(r)
        pending = np.array(short, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for r in (r for r in range(len(p.rows)) if exact[r]):
        groups.setdefault(id(p.filters[r]), []).append(r)
    for rows in groups.values():
        for r, ranking in zip(rows, exact_among(matrix, p, rows), strict=True):
            rankings[r] = ranking
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
    requests: Sequence[Request],
    tables: ItemTables,
    searcher: Searcher,
    n_wals: int,
    n_text: int,
) -> list[Pool]:
    """Every request's pool: planned once, each index searched once per round."""
    rankings: list[dict[str, np.ndarray]] = [{} for _ in requests]
    for name, p in plan(requests, tables.n_items, n_wals, n_text, searcher.filtering).items():
        found = run_plan(searcher, name, p, tables.index(name))
        for row, ranking in zip(p.rows.tolist(), found, strict=True):
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
                mask = batch.allowed_for(start + row)
                if mask is not None:
                    scores[row, ~mask] = -np.inf
            top = top_k(scores, k)
            out[rows] = np.where(np.isfinite(np.take_along_axis(scores, top, -1)), top, -1)
        return out
