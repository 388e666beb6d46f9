"""Small item tables, random requests, and searchers with a known answer for the core's
candidate pools: the brute-force oracle of the pool rule, and an ANN-like searcher that
answers short."""

from __future__ import annotations

import numpy as np

from models.core.candidates import ExactSearch, pool_sizes, search_vectors
from models.core.types import ItemTables, Request, SearchBatch


def tables(n: int = 300, seed: int = 0) -> ItemTables:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 6)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return ItemTables(
        rng.normal(size=(n, 4)).astype(np.float32), t, rng.random(n).astype(np.float32)
    )


def random_requests(tab: ItemTables, n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        user = rng.normal(size=4).astype(np.float32) if kind in (0, 2) else None
        query = rng.normal(size=6).astype(np.float32) if kind in (1, 2) else None
        profile = tab.item_text_embeddings[rng.integers(0, tab.n_items)] if kind == 3 else None
        # exclusions both inside and far outside the rankings' heads, some beyond the pool
        exclude = np.unique(rng.integers(0, tab.n_items, size=rng.integers(0, 60)))
        out.append(Request(int(rng.integers(0, 30)), user, query, profile, exclude))
    return out


def exact(tab: ItemTables) -> ExactSearch:
    return ExactSearch({"wals": tab.item_factors, "text": tab.item_text_embeddings})


class OverFetching:
    """Exact search that cannot filter and answers only ``answered`` of every k (padding
    the rest), like an ANN index; it records the rows of each call."""

    def __init__(self, tab: ItemTables, answered: float = 1.0) -> None:
        self.inner, self.answered = exact(tab), answered
        self.filtering: frozenset[str] = frozenset()
        self.calls: list[int] = []

    def search(self, name: str, batch: SearchBatch) -> np.ndarray:
        assert all(e is None for e in batch.exclude), "asked to filter, but it cannot"
        self.calls.append(len(batch.k))
        ids = self.inner.search(name, batch).copy()
        ids[:, int(ids.shape[1] * self.answered) :] = -1
        return ids


def oracle(tab: ItemTables, request: Request, n_wals: int, n_text: int) -> dict[int, set[str]]:
    """The rule written out by brute force: each source's best allowed items by a full sort."""
    sizes = pool_sizes(request, n_wals, n_text)
    out: dict[int, set[str]] = {}
    for name, vector in search_vectors(request).items():
        ranking = np.argsort(-(tab.index(name) @ vector), kind="stable")
        allowed = [i for i in ranking.tolist() if i not in set(request.exclude.tolist())]
        for item in allowed[: sizes[name]]:
            out.setdefault(item, set()).add(name)
    return out
