"""Id maps: arbitrary string ids <-> dense indices, the same in every artifact."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class IdMap:
    """Arbitrary string ids <-> dense indices 0..n-1, saved as a JSON list."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids: list[str] = [str(i) for i in ids]
        self._index = {item: pos for pos, item in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def index(self, key: str) -> int:
        """Index of one id; ``KeyError`` when unknown."""
        return self._index[key]

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Indices (int64) of the known keys, in order, and the list of unknown keys."""
        found, unknown = [], []
        for key in keys:
            pos = self._index.get(key)
            if pos is None:
                unknown.append(key)
            else:
                found.append(pos)
        return np.asarray(found, dtype=np.int64), unknown

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.ids))

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        return cls(json.loads(Path(path).read_text()))
