"""The candidate pool of a request: one rule for the service and for head training.

A request's pool is the first ``n_wals`` items of its WALS ranking and the first ``n_text``
of its text ranking that are not excluded (at least ``k`` from each, so a large ``k`` is met
from the rankings before popular items fill in), in that order; each item carries its rank
in every source that found it (the head sees both). The service ranks with FAISS one
request at a time (``serve_pool``); head training ranks exactly, many requests at once
(``candidate_pools``). With exact searches the two are equal, and a test proves it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from models.core.topk import top_k

if TYPE_CHECKING:
    from models.core.hybrid import ItemTables, Request

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(vector (dim,), k) -> (ids (<= k,), scores); ids < 0 (FAISS padding) are ignored."""
SOURCES = ("wals", "text")
Pool = dict[int, dict[str, int]]
"""item -> {source: the item's rank among the source's allowed items}, in pool order."""


def usable(vector: np.ndarray | None) -> bool:
    return vector is not None and bool(np.any(vector))


def search_vectors(request: Request) -> dict[str, np.ndarray]:
    """Which vector each index is searched with: the user vector for WALS; the query, or
    without one the user's text profile, for text."""
    out = {}
    if usable(request.user_vector):
        assert request.user_vector is not None  # narrowed by usable()
        out["wals"] = request.user_vector
    text = request.query_vector if usable(request.query_vector) else request.profile_vector
    if usable(text):
        assert text is not None
        out["text"] = text
    return out


def pool_sizes(request: Request, n_wals: int, n_text: int) -> dict[str, int]:
    """Allowed items each ranking contributes: ``n`` for the source, at least ``k``."""
    return {"wals": max(n_wals, request.k), "text": max(n_text, request.k)}


class FirstSearch(NamedTuple):
    vector: np.ndarray
    k: int
    exclude: np.ndarray | None  # ids the index drops inside the search; None: over-fetched


def first_searches(
    request: Request, n_items: int, n_wals: int, n_text: int, filtering: Collection[str] = ()
) -> dict[str, FirstSearch]:
    """The searches ``serve_pool`` makes first, by index name. Fetching ``n`` plus the number
    of excluded items finds ``n`` allowed ones whenever the index answers in full. An index
    named in ``filtering`` can drop excluded ids inside the search (FAISS's ``IDSelector``):
    a request excluding more items than its pool holds asks it to, for just the pool's size,
    so its work stops growing with how much the user has seen. A batching caller runs the
    over-fetched searches of many requests at once."""
    excluded = np.unique(request.exclude)
    sizes = pool_sizes(request, n_wals, n_text)
    out = {}
    for name, vector in search_vectors(request).items():
        if name in filtering and len(excluded) > sizes[name]:
            out[name] = FirstSearch(vector, min(sizes[name], n_items), excluded)
        else:
            out[name] = FirstSearch(vector, min(sizes[name] + len(excluded), n_items), None)
    return out


def pool(
    rankings: Mapping[str, Iterable[int]], excluded: np.ndarray, sizes: Mapping[str, int]
) -> Pool:
    """The first ``sizes[name]`` allowed items of each ranking, with their ranks there."""
    out: Pool = {}
    for name in SOURCES:
        if name not in rankings:
            continue
        taken = 0
        for item in rankings[name]:
            if taken >= sizes[name]:
                break
            if item >= 0 and not excluded[item]:
                out.setdefault(int(item), {})[name] = taken
                taken += 1
    return out


def serve_pool(
    request: Request,
    excluded: np.ndarray,
    searches: Mapping[str, SearchFn],
    n_wals: int,
    n_text: int,
) -> Pool:
    """The pool through search functions (FAISS in the service), fetching more when an index
    returned fewer than ``n`` allowed items (padding, or exclusions beyond the first
    fetch)."""
    n_items = len(excluded)
    sizes = pool_sizes(request, n_wals, n_text)
    rankings = {}
    for name, (vector, k, _) in first_searches(request, n_items, n_wals, n_text).items():
        while True:
            ids, _ = searches[name](vector, k)
            allowed = int(np.count_nonzero((ids >= 0) & ~excluded[np.maximum(ids, 0)]))
            if allowed >= sizes[name] or k >= n_items:
                break
            k = min(2 * k, n_items)
        rankings[name] = ids.tolist()
    return pool(rankings, excluded, sizes)


def candidate_pools(
    tables: ItemTables, requests: Sequence[Request], n_wals: int, n_text: int
) -> list[Pool]:
    """``serve_pool`` for many requests with exact search: one matrix product per index."""
    n_items = tables.n_items
    matrices = {"wals": tables.item_factors, "text": tables.item_text_embeddings}
    vectors = [search_vectors(r) for r in requests]
    excluded = np.zeros((len(requests), n_items), dtype=bool)
    for row, request in enumerate(requests):
        excluded[row, request.exclude] = True
    rankings: list[dict[str, list[int]]] = [{} for _ in requests]
    for name in SOURCES:
        rows = [row for row, v in enumerate(vectors) if name in v]
        if not rows:
            continue
        scores = np.stack([vectors[row][name] for row in rows]) @ matrices[name].T
        scores[excluded[rows]] = -np.inf
        size = max(pool_sizes(requests[row], n_wals, n_text)[name] for row in rows)
        top = top_k(scores, size)
        for row, ranked, row_scores in zip(rows, top, scores, strict=True):
            rankings[row][name] = ranked[np.isfinite(row_scores[ranked])].tolist()
    return [
        pool(r, excluded[row], pool_sizes(requests[row], n_wals, n_text))
        for row, r in enumerate(rankings)
    ]
