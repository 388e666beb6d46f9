"""The query-embedding cache: real query logs repeat, and an encoder call is the dearest step.

An LRU keyed by the bundle id and the query with its whitespace normalised (which changes no
tokenisation), so a new bundle never answers from an old bundle's vectors. Thread-safe: the
batcher's workers share it. Hits and misses are exported in ``/metrics``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


def normalise(query: str) -> str:
    return " ".join(query.split())


class QueryCache:
    def __init__(self, size: int, on_lookup: Callable[[bool], None] | None = None) -> None:
        self.size = size
        self.on_lookup = on_lookup  # told hit (True) or miss (False): the /metrics counters
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bundle_id: str, query: str) -> np.ndarray | None:
        if self.size == 0:
            return None
        key = (bundle_id, normalise(query))
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
            else:
                self._items.move_to_end(key)
                self.hits += 1
        if self.on_lookup is not None:
            self.on_lookup(vector is not None)
        return vector

    def put(self, bundle_id: str, query: str, vector: np.ndarray) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[(bundle_id, normalise(query))] = vector
            self._items.move_to_end((bundle_id, normalise(query)))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def keep_only(self, *bundle_ids: str) -> None:
        """Drop the vectors of every other bundle (after a swap they can never hit again)."""
        with self._lock:
            for key in [k for k in self._items if k[0] not in bundle_ids]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)
