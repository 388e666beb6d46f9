"""Diversity over a ranking, in numpy only: per-value caps and maximal marginal relevance.

Both are greedy over the ranking, one place at a time, and look only at the places before
each one (and at what earlier passes of the same ranking placed), so the first ``k`` places
of a longer answer are the answer for ``k``: pages of one ranking stay consistent.
"""

from __future__ import annotations

import numpy as np

from models.core.types import Diversity

ANY = -2
"""The key of ``room`` for every code not yet placed."""


def room(diversity: Diversity | None, placed: np.ndarray) -> dict[int, int] | None:
    """Places left per code under the cap, after the items ``placed`` earlier; None when
    nothing is capped. Code -1 (no value) is never capped."""
    if diversity is None or diversity.codes is None or diversity.max_per_value <= 0:
        return None
    cap = diversity.max_per_value
    values, counts = np.unique(diversity.codes[placed], return_counts=True)
    left = {int(v): cap - int(c) for v, c in zip(values, counts, strict=True) if v >= 0}
    return left | {ANY: cap}


def admitted(codes: np.ndarray, left: dict[int, int]) -> np.ndarray:
    """(n,) bool: which places of a sequence with these codes the caps let in, in order."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    within = np.empty(len(codes), dtype=np.int64)
    within[order] = np.arange(len(codes)) - first  # places of the same code before this one
    limit = np.array([left.get(c, left[ANY]) for c in codes.tolist()], dtype=np.int64)
    return (codes < 0) | (within < limit)


def diversify(
    order: np.ndarray,
    relevance: np.ndarray,
    embeddings: np.ndarray,
    codes: np.ndarray | None,
    k: int,
    mmr: float,
    left: dict[int, int] | None,
    placed_embeddings: np.ndarray,
) -> np.ndarray:
    """The first ``k`` positions of a pool in ``order`` (best first) that the caps admit.
    With ``mmr`` > 0 each place takes instead the admitted position maximising
    ``(1 - mmr) * relevance - mmr * (max cosine to what is already placed)``, relevance
    min-max scaled over the pool (commensurate with the cosine); ties go to the better ranked.

    ``relevance``, ``embeddings`` (unit rows) and ``codes`` are by pool position;
    ``placed_embeddings``: (t, d) of the items earlier passes placed."""
    left = left or {ANY: len(order)}
    own = codes[order] if codes is not None else np.full(len(order), -1, dtype=np.int64)
    if mmr <= 0:
        return np.asarray(order[admitted(own, left)][:k])
    rel = relevance[order].astype(np.float64)
    span = float(rel.max() - rel.min()) if len(rel) else 0.0
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    vectors = embeddings[order].astype(np.float64)
    closest = None  # per position, the max cosine to anything placed; None: nothing yet
    if len(placed_embeddings):
        closest = (vectors @ placed_embeddings.T.astype(np.float64)).max(1)
    free = np.array([c < 0 or left.get(c, left[ANY]) > 0 for c in own.tolist()], dtype=bool)
    left, picked = dict(left), list[int]()
    while len(picked) < k and free.any():
        gain = (1 - mmr) * rel - (0.0 if closest is None else mmr * closest)
        best = int(np.flatnonzero(free)[np.argmax(gain[free])])
        picked.append(best)
        free[best] = False
        code = int(own[best])
        if code >= 0:
            left[code] = left.get(code, left[ANY]) - 1
            if left[code] <= 0:
                free[own == code] = False
        similarity = vectors @ vectors[best]
        closest = similarity if closest is None else np.maximum(closest, similarity)
    return order[np.array(picked, dtype=np.int64)]
