"""Catalog columns as typed item attributes (``models.core.attributes``), and a guess at
each column's kind for ``walrus data check``."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from models.core.attributes import Column
from models.core.columns import FALSE, TRUE, CellError, parse_column, tag_lists
from models.core.ids import IdMap
from models.core.operators import Kind
from models.data.errors import DataError


def _cells(frame: pd.DataFrame, name: str) -> list[str]:
    return [str(v).strip() for v in frame[name].fillna("").tolist()]


def column(name: str, kind: Kind, cells: list[str], separator: str, path: str) -> Column:
    """One attribute from a catalog column's cells, in the column's row order; empty cells
    have no value. A cell that does not fit the kind is a ``DataError`` naming its row."""
    try:
        return parse_column(name, kind, cells, separator)
    except CellError as exc:
        raise DataError(path, str(exc), row=exc.row + 2) from None


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
    rows = tag_lists(cells, separator)
    split = sum(len(r) > 1 for r in rows) / len(rows)
    vocabulary = {t for r in rows for t in r}
    return split > 0.2 and len(vocabulary) <= max(50, len(cells) // 10)
