"""The one top-k: indices of the largest scores, best first, ties in index order."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values along the last axis of a 1-D or 2-D array, best
    first; equal scores inside the top k come in index order, so every caller ranks the
    same way. ``k`` is clamped to the number of columns."""
    scores = np.asarray(scores)
    k = max(0, min(int(k), scores.shape[-1]))
    if k == 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    values = np.take_along_axis(scores, part, -1)
    order = np.lexsort((part, -values), axis=-1)
    return np.take_along_axis(part, order, -1).astype(np.int64)
