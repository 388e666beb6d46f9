"""Attribute columns from catalog cells, and the row operations a bundle update needs:
rows appended (new items) and rows kept (compaction). Numpy only, like
``models.core.attributes``: training (``models.data.attributes``) and ``export.update`` parse
cells with the same rule."""

from __future__ import annotations

import math

import numpy as np

from models.core.attributes import Column
from models.core.errors import WalrusError
from models.core.operators import Kind

TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


class CellError(WalrusError, ValueError):
    """A cell that does not fit its column's kind; ``row`` counts from 0."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


def tag_lists(cells: list[str], separator: str) -> list[list[str]]:
    return [[t.strip() for t in c.split(separator) if t.strip()] for c in cells]


def _number(cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise ValueError(cell)
    return value


def parse_column(name: str, kind: Kind, cells: list[str], separator: str) -> Column:
    """One attribute from a column's cells (stripped strings, "" for none), in row order."""
    if kind == "numeric":
        numbers = np.full(len(cells), np.nan)
        for row, cell in enumerate(cells):
            try:
                numbers[row] = _number(cell) if cell else np.nan
            except ValueError:
                raise CellError(row, f"{name} is numeric; {cell!r} is not a number") from None
        return Column(name, kind, numbers=numbers)
    if kind == "boolean":
        lowered = [c.lower() for c in cells]
        bad = [i for i, c in enumerate(lowered) if c and c not in TRUE | FALSE]
        if bad:
            raise CellError(bad[0], f"{name} is boolean; {cells[bad[0]]!r} is not")
        flags = [1 if c in TRUE else 0 if c in FALSE else -1 for c in lowered]
        return Column(name, kind, codes=np.array(flags, dtype=np.int8))
    if kind == "tags":
        rows = tag_lists(cells, separator)
        values = sorted({t for r in rows for t in r})
        index = {v: i for i, v in enumerate(values)}
        indptr = np.cumsum([0] + [len(set(r)) for r in rows]).astype(np.int64)
        indices = np.array([index[t] for r in rows for t in sorted(set(r))], dtype=np.int32)
        return Column(name, kind, values, indptr=indptr, indices=indices)
    values = sorted({c for c in cells if c})
    index = {v: i for i, v in enumerate(values)}
    return Column(name, kind, values, codes=np.array([index.get(c, -1) for c in cells], np.int32))


def append_rows(old: Column, new: Column) -> Column:
    """``old``'s rows then ``new``'s: the values ``new`` brings join the end of the
    vocabulary, so every old code (and every filter's meaning) stays as it was."""
    if old.kind != new.kind:
        raise ValueError(f"attribute {old.name!r}: {new.kind} rows cannot join a {old.kind}")
    if old.kind == "numeric":
        return Column(old.name, old.kind, numbers=np.concatenate([old.numbers, new.numbers]))
    if old.kind == "boolean":
        return Column(old.name, old.kind, codes=np.concatenate([old.codes, new.codes]))
    values = list(old.values) + [v for v in new.values if v not in set(old.values)]
    position = {v: i for i, v in enumerate(values)}
    remap = np.array([position[v] for v in new.values] + [-1], dtype=np.int32)  # -1 stays -1
    if old.kind == "tags":
        old_indptr = np.asarray(old.indptr)
        indptr = np.concatenate([old_indptr, np.asarray(new.indptr)[1:] + old_indptr[-1]])
        indices = np.concatenate([old.indices, remap[np.asarray(new.indices)]])
        return Column(old.name, old.kind, values, indptr=indptr, indices=indices.astype(np.int32))
    codes = np.concatenate([old.codes, remap[np.asarray(new.codes)]]).astype(np.int32)
    return Column(old.name, old.kind, values, codes=codes)


def keep_rows(column: Column, keep: np.ndarray) -> Column:
    """The rows ``keep`` (item indices, ascending) of a column; the vocabulary unchanged."""
    if column.kind == "numeric":
        return Column(column.name, column.kind, numbers=np.asarray(column.numbers)[keep])
    if column.kind != "tags":
        codes = np.asarray(column.codes)[keep]
        return Column(column.name, column.kind, column.values, codes=codes)
    indptr, indices = np.asarray(column.indptr), np.asarray(column.indices)
    kept = np.zeros(len(indptr) - 1, dtype=bool)
    kept[keep] = True
    owners = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    lengths = np.diff(indptr)[keep]
    return Column(
        column.name,
        column.kind,
        column.values,
        indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        indices=indices[kept[owners]].astype(np.int32),
    )
