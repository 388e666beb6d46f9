"""Cold-start items: a ridge map from item text embeddings to WALS item factors.

Fitted on warm items, it gives factors to items with no (or too few) interactions so new
catalog items appear in the WALS index and can be retrieved for users.
"""

from __future__ import annotations

import numpy as np

from models.core.cold import cold_mask


class RidgeMap:
    """Linear map with intercept, ``factors ~ text @ coef + intercept``, L2 strength ``alpha``."""

    def __init__(self, alpha: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.coef = np.zeros((0, 0), dtype=np.float32)
        self.intercept = np.zeros(0, dtype=np.float32)

    def fit(self, text_embeddings: np.ndarray, item_factors: np.ndarray) -> RidgeMap:
        """(n, text_dim) and (n, wals_dim) rows of the same warm items."""
        if len(text_embeddings) != len(item_factors) or len(text_embeddings) == 0:
            raise ValueError("RidgeMap.fit needs the same, non-zero number of rows on both sides")
        x = text_embeddings.astype(np.float64)
        y = item_factors.astype(np.float64)
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + self.alpha * np.eye(x.shape[1])
        coef = np.linalg.solve(gram, xc.T @ yc)
        self.coef = coef.astype(np.float32)
        self.intercept = (y_mean - x_mean @ coef).astype(np.float32)
        return self

    def predict(self, text_embeddings: np.ndarray) -> np.ndarray:
        """(n, text_dim) -> (n, wals_dim) float32."""
        return (text_embeddings @ self.coef + self.intercept).astype(np.float32)


def fill_cold_items(
    item_factors: np.ndarray,
    item_counts: np.ndarray,
    text_embeddings: np.ndarray,
    min_interactions: int = 1,
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the factors of items with fewer than ``min_interactions`` by the ridge map's.

    Returns ``(factors, cold_mask)``; the input is not modified. Without warm items the
    factors are returned unchanged.
    """
    cold = cold_mask(item_counts, min_interactions)
    out = item_factors.copy()
    ridge = cold_start_map(item_factors, cold, text_embeddings, alpha)
    if cold.any() and ridge is not None:
        out[cold] = ridge.predict(text_embeddings[cold])
    return out, cold


def cold_start_map(
    item_factors: np.ndarray, cold: np.ndarray, text_embeddings: np.ndarray, alpha: float
) -> RidgeMap | None:
    """The ridge map fitted on the warm items (None without any): what gives cold items,
    and the items a bundle update adds, their WALS factors."""
    if cold.all():
        return None
    return RidgeMap(alpha).fit(text_embeddings[~cold], item_factors[~cold])
