"""The types of the request path, in one module that every other core module may import.

A batch of ``Request`` goes in, a batch of ``Recommendation`` comes out; between them the
core asks whoever holds the indexes to run a ``SearchBatch`` per index (the ``Searcher``
protocol: FAISS in the service, ``models.core.candidates.ExactSearch`` offline) and a
``HeadFn`` to score the pools' features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SOURCES = ("wals", "text")
"""The indexes a pool draws from, in pool order."""

Pool = dict[int, dict[str, int]]
"""item -> {source: the item's rank among the source's allowed items}, in pool order."""

HeadFn = Callable[[np.ndarray], np.ndarray]
"""(n, n_features) features -> (n,) scores."""


def no_items() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class ItemTables:
    """Per-item arrays, rows in item index order."""

    item_factors: np.ndarray  # (n_items, wals_dim), cold items filled by the ridge map
    item_text_embeddings: np.ndarray  # (n_items, text_dim), unit norm
    item_log_popularity: np.ndarray  # (n_items,) log1p(training count)
    item_cold: np.ndarray = field(default_factory=no_items)  # (n_items,) bool; empty: derived
    popular_order: np.ndarray = field(init=False)  # item indices, most popular first

    def __post_init__(self) -> None:
        if len(self.item_cold) == 0:  # not given: cold means no interactions at all
            self.item_cold = np.asarray(self.item_log_popularity) <= 0
        if len(self.item_cold) != len(self.item_log_popularity):
            raise ValueError("item_cold needs one flag per item")
        self.popular_order = np.lexsort(
            (np.arange(len(self.item_log_popularity)), -self.item_log_popularity)
        )

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def index(self, name: str) -> np.ndarray:
        """The rows an index of that name holds: WALS factors or text embeddings."""
        return self.item_factors if name == "wals" else self.item_text_embeddings


@dataclass(frozen=True)
class Diversity:
    """How an answer spreads: at most ``max_per_value`` items sharing a code of ``codes`` (a
    categorical attribute's per-item codes, -1: no value, never capped), and/or maximal
    marginal relevance with weight ``mmr`` on dissimilarity (0: the ranking as it is)."""

    codes: np.ndarray | None = None
    max_per_value: int = 0
    mmr: float = 0.0


@dataclass
class Request:
    """One request, already resolved to vectors and item indices.

    ``allowed``: (n_items,) bool, the items a filter lets through (None: all). ``offset``:
    the places skipped before the ``k`` returned (pages of one ranking)."""

    k: int
    user_vector: np.ndarray | None = None
    query_vector: np.ndarray | None = None
    profile_vector: np.ndarray | None = None
    exclude: np.ndarray = field(default_factory=no_items)
    allowed: np.ndarray | None = None
    offset: int = 0
    diversity: Diversity | None = None


@dataclass
class Recommendation:
    items: np.ndarray  # (k,) item indices, best first
    scores: np.ndarray  # (k,) head scores
    sources: list[list[str]]  # per item: "wals", "text", "popular"


@dataclass(frozen=True)
class SearchBatch:
    """Searches of one index for many requests at once.

    Row r wants the top ``k[r]`` items for ``vectors[r]``; ``exclude[r]``, when not None,
    lists ids the index must drop inside the search, and ``allowed[r]``, when not None, is
    the (n_items,) bool mask of the only ids it may return (only indexes named in the
    searcher's ``filtering`` are asked to do either); otherwise the caller over-fetched and
    drops them itself.
    """

    vectors: np.ndarray  # (m, dim)
    k: np.ndarray  # (m,) int
    exclude: list[np.ndarray | None]
    allowed: list[np.ndarray | None] = field(default_factory=list)  # empty: none for any row

    def allowed_for(self, row: int) -> np.ndarray | None:
        return self.allowed[row] if self.allowed else None


class Searcher(Protocol):
    """Whoever holds the indexes: runs a batch of searches on the index ``name``."""

    @property
    def filtering(self) -> frozenset[str]:
        """Indexes that can drop excluded ids inside the search."""
        ...

    def search(self, name: str, batch: SearchBatch) -> np.ndarray:
        """(m, >= max k) item ids per row, best first; ids < 0 are padding."""
        ...
