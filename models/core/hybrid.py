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
from dataclasses import dataclass, replace

import numpy as np

from models.core.candidates import (
    candidate_pools,
    eligible_mask,
    passing_count,
    search_vectors,
    usable,
)
from models.core.diversity import admitted, diversify, room
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


def window(sizes: PoolSizes) -> int:
    """Places one pass of a ranking holds: the smaller source's pool, so each pass gets the
    pool a request for that many places gets. A ranking deeper than one pass (a page past
    it, a large ``k``) is passes in turn, each excluding what the earlier ones placed: every
    page of a ranking is a slice of the same sequence, whatever its offset and ``k``."""
    return max(1, min(sizes.n_wals, sizes.n_text))


def eligible_count(tables: ItemTables, request: Request) -> int:
    """Items the request may get: those its filter allows, less its exclusions."""
    excluded = np.unique(request.exclude)
    if request.allowed is None:
        return tables.n_items - len(excluded)
    return passing_count(request.allowed, excluded)


def top_up(tables: ItemTables, request: Request, pool: Pool, k: int, placed: np.ndarray) -> Pool:
    """Popular items the request may get after the pool's own, until it holds ``k`` that
    the diversity caps admit (after what earlier passes ``placed``), or the catalog runs
    out."""
    left = room(request.diversity, placed)
    codes = request.diversity.codes if left is not None and request.diversity else None
    members = np.fromiter(pool.keys(), dtype=np.int64, count=len(pool))
    have = len(pool) if codes is None else int(admitted(codes[members], left or {}).sum())
    if have >= k:
        return pool
    ok = eligible_mask(request, tables.n_items)
    ok[members] = False
    extra = tables.popular_order[ok[tables.popular_order]]
    take = k - have
    if codes is not None:  # as many as the caps need: the admitted count reaches k
        take = len(extra)
        for n in 4 ** np.arange(1, 12) * max(k - have, 1):
            counted = np.cumsum(admitted(codes[np.r_[members, extra[:n]]], left or {}))
            if counted[-1] >= k or n >= len(extra):
                reached = np.flatnonzero(counted >= k)
                take = int(reached[0]) + 1 - len(members) if len(reached) else len(extra)
                break
    for item in extra[: max(take, 0)].tolist():
        pool[item] = {"popular": len(pool)}
    return pool


def recommend_batch(
    tables: ItemTables,
    requests: Sequence[Request],
    searcher: Searcher,
    head: HeadFn,
    sizes: PoolSizes = PoolSizes(),
) -> list[Recommendation]:
    """Every request's answer: places ``offset`` to ``offset + k`` of its ranking, built in
    passes of ``window`` places (one for most requests); in each pass the pools are planned
    and searched once per batch and scored in one head call. A request's answer does not
    depend on the others in its batch."""
    # Placed items are eligible and distinct, so a pass may get what is eligible less them.
    eligible = [eligible_count(tables, r) for r in requests]
    depth = [max(0, min(r.offset + r.k, n)) for r, n in zip(requests, eligible, strict=True)]
    w = window(sizes)
    placed = [Recommendation(no_items(), np.zeros(0, dtype=np.float32), []) for _ in requests]
    while live := [i for i in range(len(requests)) if len(placed[i].items) < depth[i]]:
        passes = [
            replace(
                requests[i],
                k=w,
                offset=0,
                exclude=np.concatenate([requests[i].exclude, placed[i].items]).astype(np.int64),
            )
            for i in live
        ]
        ks = [min(w, eligible[i] - len(placed[i].items)) for i in live]
        found = one_pass(tables, passes, ks, searcher, head, sizes, [placed[i].items for i in live])
        for i, rec in zip(live, found, strict=True):
            if len(rec.items) < w:  # nothing more to place: the catalog or the caps ran out
                depth[i] = len(placed[i].items) + len(rec.items)
            placed[i] = Recommendation(
                np.concatenate([placed[i].items, rec.items]),
                np.concatenate([placed[i].scores, rec.scores]),
                placed[i].sources + rec.sources,
            )
    return [page(rec, r.offset, r.k) for rec, r in zip(placed, requests, strict=True)]


def page(rec: Recommendation, offset: int, k: int) -> Recommendation:
    end = offset + k
    return Recommendation(rec.items[offset:end], rec.scores[offset:end], rec.sources[offset:end])


def one_pass(
    tables: ItemTables,
    requests: Sequence[Request],
    ks: Sequence[int],
    searcher: Searcher,
    head: HeadFn,
    sizes: PoolSizes,
    placed: Sequence[np.ndarray],
) -> list[Recommendation]:
    """One pass per request: ``ks[i]`` places (the window, or what is left to place), its
    pool topped up, scored and ranked."""
    searched = [i for i, r in enumerate(requests) if search_vectors(r)]
    out = {}
    for i in set(range(len(requests))).difference(searched):  # nothing known: by popularity
        pool = top_up(tables, requests[i], {}, ks[i], placed[i])
        popularity = tables.item_log_popularity[np.fromiter(pool, dtype=np.int64, count=len(pool))]
        out[i] = ranked(tables, requests[i], pool, popularity, ks[i], 0, placed[i])
    pools = candidate_pools(
        [requests[i] for i in searched], tables, searcher, sizes.n_wals, sizes.n_text
    )
    scored = [
        (i, pool, pool_features(tables, requests[i], pool)[1])
        for i, raw in zip(searched, pools, strict=True)
        if (pool := top_up(tables, requests[i], raw, ks[i], placed[i])) and ks[i]
    ]
    if scored:
        all_scores = np.asarray(head(np.concatenate([f for *_, f in scored])), np.float32)
        ends = np.cumsum([len(p) for _, p, _ in scored])[:-1]
        for (i, pool, _), scores in zip(
            scored, np.split(all_scores.reshape(-1), ends), strict=True
        ):
            out[i] = ranked(tables, requests[i], pool, scores, ks[i], sizes.cold_every, placed[i])
    empty = Recommendation(no_items(), np.zeros(0, dtype=np.float32), [])
    return [out.get(i, empty) for i in range(len(requests))]


def ranked(
    tables: ItemTables,
    request: Request,
    pool: Pool,
    scores: np.ndarray,
    k: int,
    cold_every: int,
    placed: np.ndarray,
) -> Recommendation:
    """A pool's top ``k`` by score (ties by item index): with the cold places kept, or, for
    a request asking for diversity, as ``models.core.diversity`` spreads it."""
    candidates = np.fromiter(pool.keys(), dtype=np.int64, count=len(pool))
    order = np.lexsort((candidates, -scores))
    d = request.diversity
    if d is None:
        order = reserve_cold(order, tables.item_cold[candidates], k, cold_every)
    else:
        embeddings = tables.item_text_embeddings
        order = diversify(
            order,
            scores,
            embeddings[candidates],
            None if d.codes is None else d.codes[candidates],
            k,
            d.mmr,
            room(d, placed),
            embeddings[placed],
        )
    top = candidates[order]
    return Recommendation(top, scores[order], [list(pool[i]) for i in top.tolist()])


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
