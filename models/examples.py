"""The score head's training examples: the candidate pools the service would build for
training requests, labelled by held-out positives.

Each user's training positives are split once more (and every interaction of a share of the
items is hidden, so they turn cold); WALS is fitted on the larger part, and the head learns
to order the candidate pools the service would build for requests made from the larger
part, with the smaller part's items as positives (``make_head_pools``). Scores of positives
therefore look like scores of unseen items, as they do at serving time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp

from models.config import PipelineConfig
from models.core.candidates import candidate_pools
from models.core.features import N_FEATURES, text_profile
from models.core.hybrid import pool_features
from models.core.sparse import csr_row
from models.core.types import ItemTables, Request
from models.data.splits import holdout_split
from models.head import RankingPools
from models.hybrid import exact_search, item_tables
from models.pipeline import fit_wals
from models.text import Progress, TextResources, derived_query
from models.wals import WALS

RequestKind = Literal["user", "history", "user_query", "query"]


class PlannedRequest(NamedTuple):
    """One training request: its kind, its user (a row of the training matrix), and the
    held-out item it was made from (-1: labelled by all the user's held-out items)."""

    kind: RequestKind
    user: int
    item: int


def request_counts(cfg: PipelineConfig, n_users: int, n_positives: int) -> dict[str, int]:
    """How many training requests of each kind: ``head.max_requests`` in the configured mix,
    scaled down together when users (one user-only and one history-only request each at
    most) or positives (one query request each) run out, so the mix holds."""
    mix = cfg.head.request_mix()
    room = [n_users / mix[k] for k in ("user", "history") if mix[k] > 0]
    queries = mix["user_query"] + mix["query"]
    room += [n_positives / queries] if queries > 0 else []
    total = min([cfg.head.max_requests, *room])
    return {kind: int(total * share) for kind, share in mix.items()}


def make_head_pools(
    cfg: PipelineConfig,
    model: WALS,
    tables: ItemTables,
    history: sp.csr_matrix,
    positives: sp.csr_matrix,
    texts: Sequence[str],
    logged: dict[int, list[str]],
    encode_queries: Callable[[list[str]], np.ndarray],
) -> RankingPools:
    """The pools the service would build for training requests, labelled by held-out positives.

    Requests of each kind of ``head.request_mix``: ``user`` (the user's WALS vector and text
    profile from ``history``; positives: all the user's held-out items), ``history`` (the same
    with the vector folded in from the history, as for a request carrying ``history``),
    ``user_query`` and ``query`` (a query derived from one held-out item, which is the
    only positive; with or without the user). Pools come from ``candidate_pools``, features
    from ``pool_features``: the service's own functions. Pools without a positive teach
    nothing and are dropped.
    """
    rng = np.random.default_rng(cfg.head.seed)
    plan = request_plan(cfg, rng, positives)
    queries = [derived_query(rng, p.item, texts, logged) if p.item >= 0 else "" for p in plan]
    distinct = sorted({q for q in queries if q})
    query_vectors = dict(zip(distinct, encode_queries(distinct), strict=True)) if distinct else {}
    searcher, n_wals, n_text = exact_search(tables), cfg.candidates.n_wals, cfg.candidates.n_text
    out = []
    for start in range(0, len(plan), 512):
        chunk = range(start, min(len(plan), start + 512))
        requests = [
            training_request(plan[e], model, tables, history, query_vectors.get(queries[e]))
            for e in chunk
        ]
        labels = [
            csr_row(positives, p.user) if p.item < 0 else np.array([p.item])
            for p in (plan[e] for e in chunk)
        ]
        pools = candidate_pools(requests, tables, searcher, n_wals, n_text)
        for request, pool, positive in zip(requests, pools, labels, strict=True):
            if len(pool) < 2 or not any(int(i) in pool for i in positive):
                continue
            candidates, features = pool_features(tables, request, pool)
            out.append((features, np.isin(candidates, positive)))
    return RankingPools.stack(out, N_FEATURES)


def request_plan(
    cfg: PipelineConfig, rng: np.random.Generator, positives: sp.csr_matrix
) -> list[PlannedRequest]:
    """Every training request, in ``head.request_mix``."""
    users_with_positives = np.flatnonzero(np.diff(positives.indptr))
    counts = request_counts(cfg, len(users_with_positives), positives.nnz)
    coo = positives.tocoo()
    plan: list[PlannedRequest] = []
    kinds: tuple[RequestKind, ...] = ("user", "history")
    for kind in kinds:
        chosen = rng.choice(users_with_positives, size=counts[kind], replace=False)
        plan += [PlannedRequest(kind, int(u), -1) for u in chosen]
    kinds = ("user_query", "query")
    for kind in kinds:
        pick = rng.choice(coo.nnz, size=counts[kind], replace=False)
        plan += [PlannedRequest(kind, int(coo.row[e]), int(coo.col[e])) for e in pick]
    return plan


def training_request(
    planned: PlannedRequest,
    model: WALS,
    tables: ItemTables,
    history: sp.csr_matrix,
    query_vector: np.ndarray | None,
) -> Request:
    """A training request as the service would resolve it: with the user (their vector,
    or folded in from their history for ``history``), their text profile and their items
    excluded; or, for ``query``, the query alone."""
    kind, user = planned.kind, planned.user
    seen = csr_row(history, user).astype(np.int64)
    if kind == "query":
        return Request(0, query_vector=query_vector)
    user_vector = model.fold_in(seen) if kind == "history" else model.user_factors[user]
    profile = text_profile(tables.item_text_embeddings, seen) if len(seen) else None
    return Request(
        0,
        user_vector=user_vector,
        query_vector=query_vector,
        profile_vector=profile,
        exclude=seen,
    )


def example_split(train: sp.csr_matrix, cfg: PipelineConfig) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(history, positives)``: a per-user holdout of ``head.example_fraction``, plus every
    interaction of ``head.cold_item_share`` of the items moved to the positives side, so
    some positives are cold items exactly as the service sees them."""
    split = holdout_split(train, cfg.head.example_fraction, seed=cfg.head.seed)
    history, positives = split.train, split.test
    if cfg.head.cold_item_share > 0:
        rng = np.random.default_rng(cfg.head.seed + 1)
        cold = (rng.random(train.shape[1]) < cfg.head.cold_item_share).astype(history.dtype)
        moved = history.multiply(sp.csr_matrix(cold[None, :])).tocsr()
        history = (history - moved).tocsr()
        history.eliminate_zeros()
        positives = (positives + moved).tocsr()
    return history, positives


def head_pools(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    text: TextResources,
    say: Progress,
) -> RankingPools:
    """The head's examples: ``head.example_rounds`` rounds, each its own split of ``train``
    into history and held-out positives (seeded ``head.seed + round``), its own WALS on
    that history, and the pools the service would build from it. More rounds: more pools
    per user (a small catalog of users runs out of requests after one round)."""
    rounds = []
    for r in range(cfg.head.example_rounds):
        round_cfg = cfg.model_copy(
            update={"head": cfg.head.model_copy(update={"seed": cfg.head.seed + r})}
        )
        history, positives = example_split(train, round_cfg)
        say(f"WALS for head examples, round {r + 1}")
        first = fit_wals(cfg, history, has_weights)
        tables_first, _ = item_tables(first, history, text.embeddings, cfg)
        say(f"head examples, round {r + 1}")
        rounds.append(
            make_head_pools(
                round_cfg,
                first,
                tables_first,
                history,
                positives,
                text.texts,
                text.logged,
                text.encode,
            )
        )
    return rounds[0] if len(rounds) == 1 else RankingPools.concat(rounds)
