"""Score-head features of one request's candidate pool, in numpy only.

The same function builds features for head training, offline evaluation and the service, so
the three cannot drift apart. Each candidate gets ``FEATURES``, in this order:

- ``wals_score`` u.v, ``query_score`` q.t, ``profile_score`` p.t: each source's raw score
  (0 when the request has no user, query or history);
- ``*_z``: the same score standardised within the request's pool (mean 0, sd 1 over the
  candidates), which the head cannot compute from one row: how far an item stands out among
  the others it competes with;
- ``wals_rank``, ``text_rank``: 1 / log2(2 + rank) of the item in that source's ranking (rank
  0 = its best allowed item), 0 when the source did not retrieve it;
- ``log_popularity`` (log1p of training interactions) and its ``_z`` within the pool;
- ``cold``: the item had no (or too few) interactions, its WALS factors are ridge-mapped and
  its popularity says nothing; the head learns from simulated cold items how far to trust
  each source for such items;
- ``user_known``, ``query_present``, ``history_present``: which inputs the request carried,
  so one head serves user-only, query-only and combined requests.

u: the user's WALS vector (from the bundle or folded in from history). v: the item's WALS
factors. q: the query's text embedding. t: the item's text embedding. p: the user's text
profile (normalised mean of the text embeddings of the user's items).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FEATURES = (
    "wals_score",
    "wals_score_z",
    "wals_rank",
    "query_score",
    "query_score_z",
    "profile_score",
    "profile_score_z",
    "text_rank",
    "log_popularity",
    "log_popularity_z",
    "cold",
    "user_known",
    "query_present",
    "history_present",
)
N_FEATURES = len(FEATURES)
COLUMN = {name: i for i, name in enumerate(FEATURES)}


def text_profile(item_text_embeddings: np.ndarray, item_indices: np.ndarray) -> np.ndarray:
    """(text_dim,) unit-norm mean of the items' text embeddings; zeros for no items."""
    if len(item_indices) == 0:
        return np.zeros(item_text_embeddings.shape[1], dtype=np.float32)
    mean = item_text_embeddings[item_indices].mean(0)
    norm = float(np.linalg.norm(mean))
    return np.asarray(mean / norm if norm > 0 else mean, dtype=np.float32)


def standardized(values: np.ndarray) -> np.ndarray:
    """``values`` minus their mean, over their standard deviation (0 where all are equal)."""
    sd = float(values.std())
    return (values - values.mean()) / sd if sd > 1e-6 else np.zeros_like(values)


def rank_discount(ranks: np.ndarray) -> np.ndarray:
    """1 / log2(2 + rank) for ranks >= 0, 0 for -1 (not retrieved)."""
    return np.where(ranks >= 0, 1.0 / np.log2(2.0 + np.maximum(ranks, 0)), 0.0)


def build_features(
    user_vector: np.ndarray | None,
    query_vector: np.ndarray | None,
    profile_vector: np.ndarray | None,
    item_factors: np.ndarray,
    item_text_embeddings: np.ndarray,
    item_log_popularity: np.ndarray,
    item_cold: np.ndarray,
    ranks: Mapping[str, np.ndarray],
) -> np.ndarray:
    """(n_candidates, N_FEATURES) float32 features for one request's whole pool.

    Args:
        user_vector: (wals_dim,) or None when the user is unknown.
        query_vector: (text_dim,) or None when there is no query.
        profile_vector: (text_dim,) or None when there is no history.
        item_factors: (n, wals_dim) WALS factors of the candidates.
        item_text_embeddings: (n, text_dim) text embeddings of the candidates.
        item_log_popularity: (n,) ``log1p`` of the candidates' training counts.
        item_cold: (n,) bool, the cold rule of ``models.core.cold``.
        ranks: source name (``wals``, ``text``) -> (n,) rank in that source, -1 if absent.
    """
    n = len(item_factors)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    c = COLUMN
    if user_vector is not None:
        scores = item_factors @ user_vector
        out[:, c["wals_score"]] = scores
        out[:, c["wals_score_z"]] = standardized(scores)
        out[:, c["user_known"]] = 1.0
    if query_vector is not None:
        scores = item_text_embeddings @ query_vector
        out[:, c["query_score"]] = scores
        out[:, c["query_score_z"]] = standardized(scores)
        out[:, c["query_present"]] = 1.0
    if profile_vector is not None:
        scores = item_text_embeddings @ profile_vector
        out[:, c["profile_score"]] = scores
        out[:, c["profile_score_z"]] = standardized(scores)
        out[:, c["history_present"]] = 1.0
    for source in ("wals", "text"):
        if source in ranks:
            out[:, c[f"{source}_rank"]] = rank_discount(np.asarray(ranks[source]))
    out[:, c["log_popularity"]] = item_log_popularity
    out[:, c["log_popularity_z"]] = standardized(np.asarray(item_log_popularity, np.float64))
    out[:, c["cold"]] = item_cold
    return out.astype(np.float32)
