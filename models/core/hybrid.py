"""One request's path through the hybrid recommender, in numpy only.

Candidates from the WALS index (user vector) and the text index (query vector, or the user's
text profile when there is no query), the pool rule of ``models.core.candidates`` (shared
with head training), topped up with popular items so that exactly k come back whenever the
catalog allows, rerank with the head, top k.

The service calls this with FAISS searches and the ONNX head; offline evaluation calls it
with exact searches and the numpy head. Same code, so serving and evaluation cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.core.candidates import SOURCES, Pool, SearchFn, search_vectors, serve_pool, usable
from models.core.features import build_features, text_profile
from models.core.topk import top_k

HeadFn = Callable[[np.ndarray], np.ndarray]
"""(n, n_features) features -> (n,) scores."""


@dataclass
class ItemTables:
    """Per-item arrays, rows in item index order."""

    item_factors: np.ndarray  # (n_items, wals_dim), cold items filled by the ridge map
    item_text_embeddings: np.ndarray  # (n_items, text_dim), unit norm
    item_log_popularity: np.ndarray  # (n_items,) log1p(training count)
    item_cold: np.ndarray | None = None  # (n_items,) bool; None: items without interactions
    popular_order: np.ndarray = field(init=False)  # item indices, most popular first

    def __post_init__(self) -> None:
        if self.item_cold is None:
            self.item_cold = np.asarray(self.item_log_popularity) <= 0
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


def pool_features(
    tables: ItemTables, request: Request, pool: Pool
) -> tuple[np.ndarray, np.ndarray]:
    """``(candidates, features)`` of a request's pool, in pool order: what the head scores,
    the same for the service, offline evaluation and head training."""
    candidates = np.fromiter(pool.keys(), dtype=np.int64, count=len(pool))
    ranks = {
        name: np.array([found.get(name, -1) for found in pool.values()], dtype=np.int64)
        for name in SOURCES
    }
    assert tables.item_cold is not None  # set in __post_init__
    features = build_features(
        request.user_vector if usable(request.user_vector) else None,
        request.query_vector if usable(request.query_vector) else None,
        request.profile_vector if usable(request.profile_vector) else None,
        tables.item_factors[candidates],
        tables.item_text_embeddings[candidates],
        tables.item_log_popularity[candidates],
        tables.item_cold[candidates],
        ranks,
    )
    return candidates, features


def exact_search(matrix: np.ndarray) -> SearchFn:
    """Exact inner-product top-k over the rows of ``matrix``: the search used offline."""

    def search(vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = matrix @ vector
        top = top_k(scores, k)
        return top, scores[top]

    return search


def recommend(
    tables: ItemTables,
    request: Request,
    wals_search: SearchFn,
    text_search: SearchFn,
    head: HeadFn,
    n_wals: int = 100,
    n_text: int = 100,
    cold_every: int = 0,
) -> Recommendation:
    """Candidates, exclusions, rerank; see the module docstring. ``n_wals``/``n_text`` are the
    candidates wanted from each index after exclusions; ``cold_every`` > 0 puts a cold item
    in every ``cold_every`` places (``reserve_cold``)."""
    n_items = tables.n_items
    excluded = np.zeros(n_items, dtype=bool)
    excluded[request.exclude] = True
    k = max(0, min(request.k, n_items - int(excluded.sum())))
    if not search_vectors(request):
        # Nothing known about the request: the most popular items, as they are.
        order = tables.popular_order
        popular = order[~excluded[order]][:k]
        return Recommendation(
            popular, tables.item_log_popularity[popular], [["popular"]] * len(popular)
        )

    pool = serve_pool(request, excluded, {"wals": wals_search, "text": text_search}, n_wals, n_text)
    if len(pool) < k:
        for item in tables.popular_order.tolist():
            if not excluded[item] and item not in pool:
                pool[item] = {"popular": len(pool)}
                if len(pool) >= k:
                    break
    if k == 0 or not pool:
        return Recommendation(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), [])
    candidates, features = pool_features(tables, request, pool)
    scores = np.asarray(head(features), dtype=np.float32).reshape(-1)
    assert tables.item_cold is not None  # set in __post_init__
    order = reserve_cold(
        np.lexsort((candidates, -scores)), tables.item_cold[candidates], k, cold_every
    )
    top = candidates[order]
    return Recommendation(top, scores[order], [list(pool[int(i)]) for i in top])


def reserve_cold(order: np.ndarray, cold: np.ndarray, k: int, every: int) -> np.ndarray:
    """The first ``k`` positions of ``order`` (candidate positions, best first), except that
    among the first ``n * every`` places at least ``n`` are cold items whenever the pool has
    them: the best-scored cold item not yet placed takes the place that would break it.

    A head trained on what users did ranks items nobody could interact with yet below warm
    ones; the places give new items the exposure that lets them turn warm, ranked among
    themselves by the same head. The rule looks only at the places before each one, so the
    top 10 is the top 50's first 10, as for ``every = 0`` (off)."""
    if every <= 0 or not cold[order].any():
        return order[:k]
    # Two queues in score order; each place takes the better head, or the cold one if owed.
    warm, chill = order[~cold[order]].tolist(), order[cold[order]].tolist()
    rank = np.empty(len(cold), dtype=np.int64)
    rank[order] = np.arange(len(order))
    out: list[int] = []
    w = c = 0
    while len(out) < min(k, len(order)):
        owed = (len(out) + 1) // every > c
        take_cold = c < len(chill) and (owed or w == len(warm) or rank[chill[c]] < rank[warm[w]])
        if take_cold:
            out.append(chill[c])
            c += 1
        else:
            out.append(warm[w])
            w += 1
    return np.array(out, dtype=np.int64)


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
