"""Ranking metrics: Recall@K (normalised by min(K, |test|)) and NDCG@K with binary gains.

Training items of each user are excluded before ranking; only users with at least one test
item count. Scoring is batched so the (users x items) score matrix never exists whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from models.core.sparse import csr_row
from models.core.topk import top_k

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Maps (b,) row indices of the evaluated users to (b, n_items) scores."""


def evaluate_scores(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean Recall@K and NDCG@K over the rows of ``test`` that hold any item.

    ``train`` and ``test`` are CSR (n_rows, n_items); ``score_fn`` is called with row
    indices. Returns ``{"recall@10": ..., "ndcg@10": ..., ..., "users": n}``.
    """
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} differ in shape")
    ks = sorted(set(int(k) for k in ks))
    kmax = min(max(ks), train.shape[1])
    rows = np.flatnonzero(np.diff(test.indptr) > 0)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        scores = np.array(score_fn(batch), dtype=np.float32, copy=True)
        seen = train[batch]
        seen_rows = np.repeat(np.arange(len(batch)), np.diff(seen.indptr))
        scores[seen_rows, seen.indices] = -np.inf
        top = top_k(scores, kmax)
        truth = test[batch]
        for b in range(len(batch)):
            relevant = csr_row(truth, b)
            add_user(sums, np.isin(top[b], relevant), len(relevant), ks, discounts)
    return means(sums, len(rows))


def add_user(
    sums: dict[str, float],
    hits: np.ndarray,
    n_relevant: int,
    ks: Sequence[int],
    discounts: np.ndarray,
) -> None:
    """Add one user's Recall@K and NDCG@K: ``hits`` marks which of its ranked items are
    relevant, best first."""
    for k in ks:
        kk = min(k, len(hits))
        n_ideal = min(k, n_relevant)
        sums[f"recall@{k}"] += hits[:kk].sum() / n_ideal
        sums[f"ndcg@{k}"] += (hits[:kk] * discounts[:kk]).sum() / discounts[:n_ideal].sum()


def means(sums: dict[str, float], users: int) -> dict[str, float]:
    out = {key: value / max(users, 1) for key, value in sums.items()}
    out["users"] = float(users)
    return out


def ranked_metrics(
    ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]], ks: Sequence[int] = (20,)
) -> dict[str, float]:
    """Mean Recall@K and NDCG@K of ranked lists (what a service answered), against each
    user's relevant set; users with nothing relevant do not count."""
    ks = sorted(set(int(k) for k in ks))
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    users = 0
    for items, truth in zip(ranked, relevant, strict=True):
        if truth:
            users += 1
            add_user(
                sums, np.array([i in truth for i in items[: max(ks)]]), len(truth), ks, discounts
            )
    return means(sums, users)


def ranking_metrics(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] = (10, 20, 50),
) -> dict[str, float]:
    """``evaluate_scores`` for a dot-product model, (n_users, dim) x (n_items, dim)."""
    return evaluate_scores(lambda rows: user_factors[rows] @ item_factors.T, train, test, ks)
