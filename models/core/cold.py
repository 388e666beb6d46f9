"""Which items are cold: one rule for training, export and serving."""

from __future__ import annotations

import numpy as np


def cold_mask(item_counts: np.ndarray, min_interactions: int) -> np.ndarray:
    """(n_items,) bool: items with fewer than ``min_interactions`` training interactions.

    Their WALS factors come from the ridge map of their text (``models.cold_start``); the
    bundle ships this mask (``cold_items.npy``) and the service answers ``/similar`` for
    these items by text.
    """
    return np.asarray(item_counts) < min_interactions
