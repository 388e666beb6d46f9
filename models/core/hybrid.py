"""One request's path through the hybrid recommender, in numpy only.

Candidates from the WALS index (user vector) and the text index (query vector, or the user's
text profile when there is no query), union, exclusions with over-fetch so that exactly k come
back whenever the catalog allows (topped up with popular items), rerank with the head, top k.

The service calls this with FAISS searches and the ONNX head; offline evaluation calls it
with exact searches and the numpy head. Same code, so serving and evaluation cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.core.features import build_features, text_profile

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(vector (dim,), k) -> (ids (<= k,), scores); ids < 0 (FAISS padding) are ignored."""
HeadFn = Callable[[np.ndarray], np.ndarray]
"""(n, n_features) features -> (n,) scores."""


@dataclass
class ItemTables:
    """Per-item arrays, rows in item index order."""

    item_factors: np.ndarray  # (n_items, wals_dim), cold items filled by the ridge map
    item_text_embeddings: np.ndarray  # (n_items, text_dim), unit norm
    item_log_popularity: np.ndarray  # (n_items,) log1p(training count)
    popular_order: np.ndarray = field(init=False)  # item indices, most popular first

    def __post_init__(self) -> None:
        self.popular_order = np.lexsort(
            (np.arange(len(self.item_log_popularity)), -self.item_log_popularity)
        )

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])


@dataclass
class Request:
    """One request, already resolved to vectors and item indices."""

    k: int
    user_vector: np.ndarray | None = None
    query_vector: np.ndarray | None = None
    profile_vector: np.ndarray | None = None
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class Recommendation:
    items: np.ndarray  # (k,) item indices, best first
    scores: np.ndarray  # (k,) head scores
    sources: list[list[str]]  # per item: "wals", "text", "popular"


def exact_search(matrix: np.ndarray) -> SearchFn:
    """Exact inner-product top-k over the rows of ``matrix``: the oracle FAISS is checked
    against, and the search used offline."""

    def search(vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = matrix @ vector
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return top, scores[top]

    return search


def _usable(vector: np.ndarray | None) -> bool:
    return vector is not None and bool(np.any(vector))


def first_searches(
    request: Request, n_items: int, n_wals: int = 100, n_text: int = 100
) -> dict[str, tuple[np.ndarray, int]]:
    """The searches ``recommend`` makes first: index name -> (vector, k).

    A batching caller runs these for many requests at once and hands ``recommend`` search
    functions that answer from those results; later rounds (over-fetch after exclusions)
    search directly.
    """
    n_excluded = len(np.unique(request.exclude))
    text_vector = request.query_vector if _usable(request.query_vector) else request.profile_vector
    out = {}
    if _usable(request.user_vector):
        assert request.user_vector is not None
        out["wals"] = (request.user_vector, min(n_wals + n_excluded, n_items))
    if _usable(text_vector):
        assert text_vector is not None
        out["text"] = (text_vector, min(n_text + n_excluded, n_items))
    return out


def recommend(
    tables: ItemTables,
    request: Request,
    wals_search: SearchFn,
    text_search: SearchFn,
    head: HeadFn,
    n_wals: int = 100,
    n_text: int = 100,
) -> Recommendation:
    """Candidates, exclusions, rerank; see the module docstring. ``n_wals``/``n_text`` are the
    candidates wanted from each index after exclusions."""
    n_items = tables.n_items
    excluded = np.zeros(n_items, dtype=bool)
    excluded[request.exclude] = True
    k = max(0, min(request.k, n_items - int(excluded.sum())))
    text_vector = request.query_vector if _usable(request.query_vector) else request.profile_vector
    use_wals, use_text = _usable(request.user_vector), _usable(text_vector)

    if not (use_wals or use_text or _usable(request.profile_vector)):
        # Nothing known about the request: the most popular items, as they are.
        order = tables.popular_order
        popular = order[~excluded[order]][:k]
        return Recommendation(
            popular, tables.item_log_popularity[popular], [["popular"]] * len(popular)
        )

    first = first_searches(request, n_items, n_wals, n_text)
    n_excluded = int(excluded.sum())
    fetch_wals = first["wals"][1] if "wals" in first else n_wals + n_excluded
    fetch_text = first["text"][1] if "text" in first else n_text + n_excluded
    while True:
        sources: dict[int, list[str]] = {}
        for use, vector, fetch, search, name in (
            (use_wals, request.user_vector, fetch_wals, wals_search, "wals"),
            (use_text, text_vector, fetch_text, text_search, "text"),
        ):
            if not use:
                continue
            assert vector is not None
            ids, _ = search(vector, min(fetch, n_items))
            for item in ids.tolist():
                if item >= 0 and not excluded[item]:
                    sources.setdefault(item, []).append(name)
        exhausted = fetch_wals >= n_items and fetch_text >= n_items
        if len(sources) >= k or exhausted or not (use_wals or use_text):
            break
        fetch_wals, fetch_text = fetch_wals * 2, fetch_text * 2

    if len(sources) < k:
        for item in tables.popular_order.tolist():
            if not excluded[item] and item not in sources:
                sources[item] = ["popular"]
                if len(sources) >= k:
                    break

    candidates = np.fromiter(sources.keys(), dtype=np.int64, count=len(sources))
    if k == 0 or len(candidates) == 0:
        return Recommendation(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), [])
    features = build_features(
        request.user_vector if use_wals else None,
        request.query_vector if _usable(request.query_vector) else None,
        request.profile_vector if _usable(request.profile_vector) else None,
        tables.item_factors[candidates],
        tables.item_text_embeddings[candidates],
        tables.item_log_popularity[candidates],
    )
    scores = np.asarray(head(features), dtype=np.float32).reshape(-1)
    order = np.lexsort((candidates, -scores))[:k]
    top = candidates[order]
    return Recommendation(top, scores[order], [sources[int(i)] for i in top])


def build_request(
    k: int,
    *,
    user_vector: np.ndarray | None,
    seen: np.ndarray,
    history: np.ndarray,
    exclude: np.ndarray,
    exclude_seen: bool,
    query_vector: np.ndarray | None,
    item_text_embeddings: np.ndarray,
    fold_in: Callable[[np.ndarray], np.ndarray],
) -> Request:
    """Resolve one request's inputs into vectors and exclusions, the same way everywhere.

    ``seen`` are the known user's training items (empty for unknown users), ``history`` the
    request's fresh item indices. With a history the user vector is folded in from
    seen + history (a known user's fresh interactions update their vector); the text profile
    is built from the same items; with ``exclude_seen`` those items are excluded as well.
    """
    interactions = np.unique(np.concatenate([seen, history]).astype(np.int64))
    if len(history):
        user_vector = fold_in(interactions)
    profile = text_profile(item_text_embeddings, interactions) if len(interactions) else None
    blocked = np.concatenate([exclude, interactions]) if exclude_seen else exclude
    return Request(
        k=k,
        user_vector=user_vector,
        query_vector=query_vector,
        profile_vector=profile,
        exclude=np.unique(blocked.astype(np.int64)),
    )
