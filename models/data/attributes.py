"""Catalog columns as typed item attributes (``models.core.attributes``), and a guess at
each column's kind for ``walrus data check``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from models.core.attributes import Column, Kind
from models.core.ids import IdMap
from models.data.errors import DataError

TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


def _cells(frame: pd.DataFrame, name: str) -> list[str]:
    return [str(v).strip() for v in frame[name].fillna("").tolist()]


def _tags(cells: list[str], separator: str) -> list[list[str]]:
    return [[t.strip() for t in c.split(separator) if t.strip()] for c in cells]


def column(name: str, kind: Kind, cells: list[str], separator: str, path: str) -> Column:
    """One attribute from a catalog column's cells, in the column's row order; empty cells
    have no value. A cell that does not fit the kind is a ``DataError`` naming its row."""
    if kind == "numeric":
        numbers = pd.to_numeric(pd.Series(cells).replace("", np.nan), errors="coerce")
        bad = numbers.isna() & (pd.Series(cells) != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(path, f"{name} is numeric; {cells[row]!r} is not a number", row=row + 2)
        return Column(name, kind, numbers=numbers.to_numpy(dtype=np.float64))
    if kind == "boolean":
        lowered = [c.lower() for c in cells]
        bad = [i for i, c in enumerate(lowered) if c and c not in TRUE | FALSE]
        if bad:
            raise DataError(path, f"{name} is boolean; {cells[bad[0]]!r} is not", row=bad[0] + 2)
        flags = [1 if c in TRUE else 0 if c in FALSE else -1 for c in lowered]
        return Column(name, kind, codes=np.array(flags, dtype=np.int8))
    if kind == "tags":
        rows = _tags(cells, separator)
        values = sorted({t for r in rows for t in r})
        index = {v: i for i, v in enumerate(values)}
        indptr = np.cumsum([0] + [len(set(r)) for r in rows]).astype(np.int64)
        indices = np.array([index[t] for r in rows for t in sorted(set(r))], dtype=np.int32)
        return Column(name, kind, values, indptr=indptr, indices=indices)
    values = sorted({c for c in cells if c})
    index = {v: i for i, v in enumerate(values)}
    codes = np.array([index.get(c, -1) for c in cells], dtype=np.int32)
    return Column(name, kind, values, codes=codes)


def catalog_attributes(
    frame: pd.DataFrame,
    declared: Mapping[str, Kind],
    separator: str,
    items: IdMap | None = None,
) -> list[Column]:
    """The ``declared`` columns of a catalog as attributes. With ``items`` (a trained
    model's item order), rows are put in that order and items the catalog lacks get no
    value."""
    path = str(frame.attrs.get("path", "catalog"))
    missing = sorted(set(declared) - set(frame.columns))
    if missing:
        raise DataError(path, f"data.attributes names column '{missing[0]}', which it lacks")
    if items is not None:
        frame = frame.set_index("item_id").reindex(list(items.ids)).reset_index()
    return [column(n, k, _cells(frame, n), separator, path) for n, k in declared.items()]


def suggest_kinds(frame: pd.DataFrame, separator: str) -> dict[str, str]:
    """A guess at each catalog column's kind: numeric, boolean, tags (many cells split on
    the separator, from a small vocabulary), categorical (values repeat: at most half as
    many distinct values as cells, and at most 1,000), else text."""
    out = {}
    for name in (c for c in frame.columns if c != "item_id"):
        cells = [c for c in _cells(frame, name) if c]
        if not cells:
            continue
        distinct = set(cells)
        if not pd.to_numeric(pd.Series(cells), errors="coerce").isna().any():
            out[name] = "numeric"
        elif {c.lower() for c in distinct} <= TRUE | FALSE:
            out[name] = "boolean"
        elif _looks_like_tags(cells, separator):
            out[name] = "tags"
        elif 2 * len(distinct) <= len(cells) and len(distinct) <= 1000:  # values repeat
            out[name] = "categorical"
        else:
            out[name] = "text"
    return out


def _looks_like_tags(cells: list[str], separator: str) -> bool:
    rows = _tags(cells, separator)
    split = sum(len(r) > 1 for r in rows) / len(rows)
    vocabulary = {t for r in rows for t in r}
    return split > 0.2 and len(vocabulary) <= max(50, len(cells) // 10)
