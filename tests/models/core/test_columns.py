"""Attribute columns from cells, rows appended and rows kept: checked against parsing the
whole column at once (the oracle: what a full export of the same catalog would hold)."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.attributes import Column, ItemAttributes
from models.core.columns import CellError, append_rows, keep_rows, parse_column

CELLS = {
    "categorical": (["a", "b", "", "a"], ["c", "a", ""]),
    "tags": (["x, y", "", "y", "z"], ["w, x", "y", ""]),
    "numeric": (["1", "2.5", "", "-3"], ["4", "", "1e3"]),
    "boolean": (["true", "no", "", "1"], ["f", "", "yes"]),
}


def values_of(column: Column, n: int) -> list[object]:
    """Each row's value(s) as text or number, whatever the codes."""
    if column.kind == "numeric":
        return [None if np.isnan(v) else float(v) for v in column.numbers]
    if column.kind == "boolean":
        return [int(c) for c in column.codes]
    if column.kind == "tags":
        ip, ix = column.indptr, column.indices
        return [sorted(column.values[c] for c in ix[ip[i] : ip[i + 1]]) for i in range(n)]
    return [column.values[c] if c >= 0 else None for c in column.codes]


@pytest.mark.parametrize("kind", list(CELLS))
def test_appended_rows_hold_what_one_parse_of_all_rows_holds(kind):
    old_cells, new_cells = CELLS[kind]
    old = parse_column("f", kind, old_cells, ",")
    joined = append_rows(old, parse_column("f", kind, new_cells, ","))
    whole = parse_column("f", kind, old_cells + new_cells, ",")
    n = len(old_cells) + len(new_cells)
    assert values_of(joined, n) == values_of(whole, n)
    if kind in ("categorical", "tags"):  # old codes keep their meaning
        assert joined.values[: len(old.values)] == old.values
    ItemAttributes(n, [joined])  # its bitmaps build


@pytest.mark.parametrize("kind", list(CELLS))
def test_kept_rows_are_those_rows(kind):
    cells = CELLS[kind][0] + CELLS[kind][1]
    column = parse_column("f", kind, cells, ",")
    keep = np.array([0, 2, 3, 6])
    kept = keep_rows(column, keep)
    assert values_of(kept, 4) == [values_of(column, len(cells))[i] for i in keep]


def test_a_cell_that_does_not_fit_names_its_row():
    with pytest.raises(CellError, match="not a number") as caught:
        parse_column("year", "numeric", ["1999", "soon"], ",")
    assert caught.value.row == 1
    with pytest.raises(CellError, match="boolean"):
        parse_column("in_stock", "boolean", ["maybe"], ",")
