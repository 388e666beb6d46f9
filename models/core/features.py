"""Score-head features of (user, query, item), in numpy only.

The same function builds features for head training, offline evaluation and the service, so
the three cannot drift apart. For one request and its candidate items:

    [ u*v (wals_dim) | q*t (text_dim) | u.v | q.t | p.t | log(1+popularity)
      | user_known | query_present ]

u: the user's WALS vector (from the bundle or folded in from history), zeros when unknown.
v: the item's WALS factors. q: the query's text embedding, zeros without a query.
t: the item's text embedding. p: the user's text profile (normalised mean of the text
embeddings of the user's items), zeros without history: content signal for requests that
carry no query. The flags let one head serve user-only, query-only and combined requests.
"""

from __future__ import annotations

import numpy as np

N_SCALARS = 6


def feature_dim(wals_dim: int, text_dim: int) -> int:
    """Width of the feature vector."""
    return wals_dim + text_dim + N_SCALARS


def text_profile(item_text_embeddings: np.ndarray, item_indices: np.ndarray) -> np.ndarray:
    """(text_dim,) unit-norm mean of the items' text embeddings; zeros for no items."""
    if len(item_indices) == 0:
        return np.zeros(item_text_embeddings.shape[1], dtype=np.float32)
    mean = item_text_embeddings[item_indices].mean(0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def build_features(
    user_vector: np.ndarray | None,
    query_vector: np.ndarray | None,
    profile_vector: np.ndarray | None,
    item_factors: np.ndarray,
    item_text_embeddings: np.ndarray,
    item_log_popularity: np.ndarray,
) -> np.ndarray:
    """(n_candidates, feature_dim) float32 features for one request.

    Args:
        user_vector: (wals_dim,) or None when the user is unknown.
        query_vector: (text_dim,) or None when there is no query.
        profile_vector: (text_dim,) or None when there is no history.
        item_factors: (n, wals_dim) WALS factors of the candidates.
        item_text_embeddings: (n, text_dim) text embeddings of the candidates.
        item_log_popularity: (n,) ``log1p`` of the candidates' training counts.
    """
    n, wals_dim = item_factors.shape
    text_dim = item_text_embeddings.shape[1]
    out = np.zeros((n, feature_dim(wals_dim, text_dim)), dtype=np.float32)
    scalars = wals_dim + text_dim
    if user_vector is not None:
        out[:, :wals_dim] = item_factors * user_vector
        out[:, scalars] = item_factors @ user_vector
        out[:, scalars + 4] = 1.0
    if query_vector is not None:
        out[:, wals_dim:scalars] = item_text_embeddings * query_vector
        out[:, scalars + 1] = item_text_embeddings @ query_vector
        out[:, scalars + 5] = 1.0
    if profile_vector is not None:
        out[:, scalars + 2] = item_text_embeddings @ profile_vector
    out[:, scalars + 3] = item_log_popularity
    return out
