"""A batch of requests through the hybrid recommender, in numpy only.

Candidates from the WALS index (user vector) and the text index (query vector, or the user's
text profile when there is no query), by the pool rule of ``models.core.candidates`` (shared
with head training), topped up with popular items so that exactly k come back whenever the
catalog allows; the head scores every pool's features in one call; top k.

The service calls this with its FAISS searcher and the ONNX head; offline evaluation with
``ExactSearch`` and the numpy head. Same code, so serving and evaluation cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.core.candidates import candidate_pools, search_vectors, usable
from models.core.features import build_features, text_profile
from models.core.types import (
    SOURCES,
    HeadFn,
    ItemTables,
    Pool,
    Recommendation,
    Request,
    Searcher,
    no_items,
)


@dataclass(frozen=True)
class PoolSizes:
    """How many candidates each index gives a pool, and the places kept for cold items."""

    n_wals: int = 100
    n_text: int = 100
    cold_every: int = 0  # > 0: a cold item in every ``cold_every`` places (``reserve_cold``)


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


def answer_size(tables: ItemTables, request: Request) -> int:
    """``k``, or fewer when the exclusions leave fewer items."""
    return max(0, min(request.k, tables.n_items - len(np.unique(request.exclude))))


def most_popular(tables: ItemTables, request: Request, k: int) -> Recommendation:
    """Nothing known about the request: the ``k`` most popular items, as they are."""
    order = tables.popular_order
    popular = order[~np.isin(order, request.exclude)][:k]
    return Recommendation(
        popular, tables.item_log_popularity[popular], [["popular"]] * len(popular)
    )


def top_up(tables: ItemTables, request: Request, pool: Pool, k: int) -> Pool:
    """Popular items after the pool's own, until it holds ``k`` (or the catalog runs out)."""
    if len(pool) >= k:
        return pool
    blocked = set(request.exclude.tolist()) | set(pool)
    for item in tables.popular_order.tolist():
        if item not in blocked:
            pool[item] = {"popular": len(pool)}
            if len(pool) >= k:
                break
    return pool


def recommend_batch(
    tables: ItemTables,
    requests: Sequence[Request],
    searcher: Searcher,
    head: HeadFn,
    sizes: PoolSizes = PoolSizes(),
) -> list[Recommendation]:
    """Every request's answer: pools planned and searched once per batch, one head call for
    all their features, each request's own top k. A request's answer does not depend on the
    others in its batch."""
    ks = [answer_size(tables, r) for r in requests]
    searched = [i for i, r in enumerate(requests) if search_vectors(r)]
    unsearched = set(range(len(requests))).difference(searched)
    out = {i: most_popular(tables, requests[i], ks[i]) for i in unsearched}
    pools = candidate_pools(
        [requests[i] for i in searched], tables.n_items, searcher, sizes.n_wals, sizes.n_text
    )
    scored = [
        (i, pool, *pool_features(tables, requests[i], pool))
        for i, raw in zip(searched, pools, strict=True)
        if (pool := top_up(tables, requests[i], raw, ks[i])) and ks[i]
    ]
    if scored:
        all_scores = np.asarray(head(np.concatenate([f for *_, f in scored])), np.float32)
        ends = np.cumsum([len(c) for _, _, c, _ in scored])[:-1]
        for (i, pool, candidates, _), scores in zip(
            scored, np.split(all_scores.reshape(-1), ends), strict=True
        ):
            out[i] = ranked(tables, pool, candidates, scores, ks[i], sizes.cold_every)
    empty = Recommendation(no_items(), np.zeros(0, dtype=np.float32), [])
    return [out.get(i, empty) for i in range(len(requests))]


def ranked(
    tables: ItemTables,
    pool: Pool,
    candidates: np.ndarray,
    scores: np.ndarray,
    k: int,
    cold_every: int,
) -> Recommendation:
    """A pool's top ``k`` by head score (ties by item index), with the cold places kept."""
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
