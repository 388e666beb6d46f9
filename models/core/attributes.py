"""Item attributes and the filters over them, in numpy only: one copy of the rule for the
service, offline evaluation and the benchmarks.

Four kinds of attribute, each a column in item index order:

- ``categorical``: one value per item (a topic, a brand): ``codes`` into ``values``, -1 none;
- ``tags``: several values per item (MovieLens genres): a CSR of codes into ``values``;
- ``numeric``: a float64 per item (a year, a price), NaN none;
- ``boolean``: 1, 0 or -1 (none) per item (in stock).

A filter is ``{field: {operator: value}}``, fields ANDed:

- categorical and boolean: ``eq``, ``ne``, ``in``, ``not_in``;
- tags: ``any`` (at least one of), ``all``, ``none`` (none of);
- numeric: ``gt``, ``gte``, ``lt``, ``lte``;
- ``item_id``: ``in`` (an allow list) or ``not_in`` (a deny list), given as item indices.

An item without a value never matches a positive condition (``eq``, ``in``, ``any``, ``all``,
the comparisons) and always matches a negative one (``ne``, ``not_in``, ``none``): each
negative operator is its positive's complement. A value the catalog never had matches no
item (it is not an error: a filter written for tomorrow's catalog still runs today).

Per-value bitmaps (packed bits, one per value of a categorical, tag or boolean column, for
columns of at most ``BITMAP_VALUES`` values) are built once when the attributes are
loaded; a filter ORs and ANDs them, numeric conditions compare the column, and the result
is one (n_items,) bool mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.core.errors import WalrusError
from models.core.operators import CAPPABLE, ITEM_ID, LIST_OPERATORS, NEGATIVE, OPERATORS, Kind

ITEM_PATH = f"filter.{ITEM_ID}"
BITMAP_VALUES = 4096
"""Columns with more values than this compute each filter from their codes instead: one
bitmap per value would cost values x items / 8 bytes."""


class FilterError(WalrusError):
    """A filter that does not fit the bundle's attributes; ``field`` is its path, such as
    ``filter.year.gte``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class Column:
    """One attribute, in item index order (see the module docstring)."""

    name: str
    kind: Kind
    values: list[str] = field(default_factory=list)  # categorical, tags: the vocabulary
    codes: np.ndarray | None = None  # categorical: (n,) int32; boolean: (n,) int8
    indptr: np.ndarray | None = None  # tags: (n + 1,) CSR row pointers
    indices: np.ndarray | None = None  # tags: codes, row after row
    numbers: np.ndarray | None = None  # numeric: (n,) float64

    def rows_with(self, code: int) -> np.ndarray:
        """Tags: the items carrying the value ``code``."""
        indptr, indices = np.asarray(self.indptr), np.asarray(self.indices)
        owners = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        return np.asarray(owners[indices == code])


def with_item_indices(
    spec: Mapping[str, Any], find: Callable[[list[str], str], np.ndarray]
) -> dict[str, Any]:
    """``spec`` with the ids of its ``item_id`` condition turned into item indices by
    ``find`` (given the ids and the condition's path, such as ``filter.item_id.in``); a
    value that is not a list finds nothing."""
    out = dict(spec)
    condition = spec.get(ITEM_ID)
    if isinstance(condition, Mapping):
        out[ITEM_ID] = {
            op: find([str(i) for i in ids] if isinstance(ids, list) else [], f"{ITEM_PATH}.{op}")
            for op, ids in condition.items()
        }
    return out


def pack(mask: np.ndarray) -> np.ndarray:
    """A bool mask as packed bits, little bit order: FAISS's ``IDSelectorBitmap`` layout."""
    return np.packbits(np.asarray(mask, dtype=bool), bitorder="little")


def unpack(bits: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(bits, count=n, bitorder="little").view(bool)


class ItemAttributes:
    """A catalog's attributes, with the per-value bitmaps its filters combine."""

    def __init__(self, n_items: int, columns: Sequence[Column]) -> None:
        self.n_items = n_items
        self.columns = {c.name: c for c in columns}
        if ITEM_ID in self.columns:
            raise ValueError("item_id is the filter on item ids, not an attribute name")
        self._bits: dict[str, list[np.ndarray]] = {}
        for column in columns:
            n_values = 2 if column.kind == "boolean" else len(column.values)
            if column.kind != "numeric" and n_values <= BITMAP_VALUES:
                self._bits[column.name] = [pack(self._rows(column, v)) for v in range(n_values)]

    def schema(self) -> dict[str, Kind]:
        """Field name -> kind: what the OpenAPI document and ``/readyz`` list."""
        return {name: c.kind for name, c in self.columns.items()}

    def _rows(self, column: Column, code: int) -> np.ndarray:
        """(n,) bool: items whose ``column`` holds the value ``code`` (boolean: 0 or 1)."""
        mask = np.zeros(self.n_items, dtype=bool)
        if column.kind == "tags":
            mask[column.rows_with(code)] = True
        else:
            mask[:] = np.asarray(column.codes) == code
        return mask

    def _any_of(self, column: Column, codes: list[int]) -> np.ndarray:
        """Packed bits of the items holding at least one of ``codes``."""
        bits = np.zeros((self.n_items + 7) // 8, dtype=np.uint8)
        prepared = self._bits.get(column.name)
        for code in codes:
            bits |= prepared[code] if prepared is not None else pack(self._rows(column, code))
        return bits

    def mask(self, spec: Mapping[str, Any] | None) -> np.ndarray | None:
        """The (n_items,) bool mask of the items ``spec`` allows; None for no filter.
        ``FilterError`` names the first part that does not fit."""
        if not spec:
            return None
        if not isinstance(spec, Mapping):
            raise FilterError("filter", "must be an object of field: {operator: value}")
        every = pack(np.ones(self.n_items, dtype=bool))
        bits = every.copy()
        for name, condition in spec.items():
            where = f"filter.{name}"
            if not isinstance(condition, Mapping) or not condition:
                raise FilterError(where, "must be an object of operator: value")
            for op, value in condition.items():
                bits &= self._condition(name, op, value, f"{where}.{op}", every)
        return unpack(bits, self.n_items).copy()

    def _condition(self, name: str, op: str, value: Any, where: str, every: np.ndarray) -> Any:
        if name == ITEM_ID:
            return self._item_ids(op, value, where, every)
        column = self.columns.get(name)
        if column is None:
            known = ", ".join(sorted(self.columns)) or "none"
            raise FilterError(f"filter.{name}", f"unknown field (attributes: {known}; item_id)")
        if op not in OPERATORS[column.kind]:
            ops = ", ".join(OPERATORS[column.kind])
            raise FilterError(where, f"{column.kind} field {name!r} takes {ops}")
        if column.kind == "numeric":
            return pack(self._compare(column, op, value, where))
        negative = op in NEGATIVE
        positive = NEGATIVE.get(op, op)
        codes = self._codes(column, positive, value, where)
        if positive == "all":
            bits = every.copy()
            for code in codes:
                bits &= self._any_of(column, [code])
            if not codes:
                return every
        else:
            bits = self._any_of(column, codes)
        return (~bits & every) if negative else bits

    def _codes(self, column: Column, op: str, value: Any, where: str) -> list[int]:
        """The codes an operator's value names (values the catalog lacks name none)."""
        many = op in LIST_OPERATORS
        if many and (not isinstance(value, list) or not value):
            raise FilterError(where, "must be a non-empty list")
        values = value if many else [value]
        if column.kind == "boolean":
            if not all(isinstance(v, bool) for v in values):
                raise FilterError(where, f"{column.name} is boolean: give true or false")
            return sorted({int(v) for v in values})
        if not all(isinstance(v, str) for v in values):
            raise FilterError(where, f"{column.name} is {column.kind}: give strings")
        index = {v: i for i, v in enumerate(column.values)}
        return sorted({index[v] for v in values if v in index})

    def _compare(self, column: Column, op: str, value: Any, where: str) -> np.ndarray:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise FilterError(where, f"{column.name} is numeric: give a finite number")
        numbers = np.asarray(column.numbers, dtype=np.float64)
        with np.errstate(invalid="ignore"):  # NaN (no value) compares False: never matches
            if op == "gt":
                return numbers > value
            if op == "gte":
                return numbers >= value
            if op == "lt":
                return numbers < value
            return numbers <= value

    def _item_ids(self, op: str, value: Any, where: str, every: np.ndarray) -> np.ndarray:
        if op not in OPERATORS[ITEM_ID]:
            raise FilterError(where, "item_id takes in, not_in")
        if not isinstance(value, np.ndarray) or value.dtype.kind != "i":
            raise FilterError(where, "must be a list of item ids")
        mask = np.zeros(self.n_items, dtype=bool)
        mask[value[(value >= 0) & (value < self.n_items)]] = True
        return (~pack(mask) & every) if op == "not_in" else pack(mask)

    def diversity_codes(self, name: str, where: str) -> np.ndarray:
        """The per-item codes a ``max_per_value`` cap counts: a categorical or boolean field."""
        column = self.columns.get(name)
        if column is None or column.kind not in CAPPABLE:
            choices = [n for n, c in self.columns.items() if c.kind in CAPPABLE]
            raise FilterError(
                where, f"must name a categorical or boolean field ({', '.join(choices) or 'none'})"
            )
        return np.asarray(column.codes, dtype=np.int64)


PARTS: dict[str, tuple[str, ...]] = {
    "categorical": ("codes",),
    "boolean": ("codes",),
    "tags": ("indptr", "indices"),
    "numeric": ("numbers",),
}
"""The arrays each kind of column is stored as."""


def array_name(position: int, part: str) -> str:
    """A column's array, by the column's position (a column's name may hold any
    character; a file name should not)."""
    return f"attributes/{position}.{part}.npy"


def array_names(description: Mapping[str, Any]) -> list[str]:
    """The arrays a stored description refers to."""
    columns = description.get("columns", [])
    return [
        array_name(position, part)
        for position, entry in enumerate(columns)
        for part in PARTS.get(entry.get("kind"), ())
    ]


def to_arrays(columns: Sequence[Column]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Columns as a JSON-ready description and named arrays: how a trained model and a
    bundle store them."""
    described, arrays = [], {}
    for position, column in enumerate(columns):
        described.append({"name": column.name, "kind": column.kind, "values": column.values})
        for part in PARTS[column.kind]:
            arrays[array_name(position, part)] = getattr(column, part)
    return {"columns": described}, arrays


def from_arrays(
    description: Mapping[str, Any], arrays: Mapping[str, np.ndarray], n_items: int
) -> list[Column]:
    """The columns ``to_arrays`` stored, each checked against ``n_items``; ``ValueError``
    names the first one that does not fit."""
    columns = []
    for position, entry in enumerate(description.get("columns", [])):
        name, kind, values = entry["name"], entry["kind"], list(entry.get("values", []))
        if kind not in PARTS:
            raise ValueError(f"attribute {name!r}: unknown kind {kind!r}")
        parts = {part: np.asarray(arrays[array_name(position, part)]) for part in PARTS[kind]}
        column = Column(name, kind, values, **parts)
        _check(column, n_items)
        columns.append(column)
    return columns


def _check(column: Column, n_items: int) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f"attribute {column.name!r}: {what}")

    if column.kind == "tags":
        indptr, indices = np.asarray(column.indptr), np.asarray(column.indices)
        if len(indptr) != n_items + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise bad(f"row pointers do not describe {n_items} items")
        if indptr[-1] != len(indices):
            raise bad("row pointers and codes disagree")
        if len(indices) and (indices.min() < 0 or indices.max() >= len(column.values)):
            raise bad("a code lies outside its values")
        return
    array = column.numbers if column.kind == "numeric" else column.codes
    if array is None or array.shape != (n_items,):
        raise bad(f"holds {None if array is None else array.shape}, expected ({n_items},)")
    limit = 2 if column.kind == "boolean" else len(column.values)
    if column.kind != "numeric" and len(array) and (array.min() < -1 or array.max() >= limit):
        raise bad("a code lies outside its values")
