"""Reading interaction logs and catalogs (CSV, JSONL, Parquet) with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.data.errors import DataError

INTERACTION_COLUMNS = ("user_id", "item_id")
OPTIONAL_INTERACTION_COLUMNS = ("weight", "rating", "timestamp")


def _read(path: Path, suffix: str) -> pd.DataFrame:
    id_dtypes = {c: str for c in ("user_id", "item_id")}
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=id_dtypes)
    return pd.read_csv(
        path,
        sep="\t" if suffix == ".tsv" else ",",
        dtype=id_dtypes,
        keep_default_na=False,
        na_values={c: [""] for c in OPTIONAL_INTERACTION_COLUMNS},
    )


def read_table(path: str | Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read CSV, JSONL (``.jsonl``/``.ndjson``) or Parquet; ids are kept as strings.

    Raises ``DataError`` when the file is missing, empty, unreadable or lacks a column.
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError(name, "file not found")
    if path.stat().st_size == 0:
        raise DataError(name, "file is empty")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt"):
        raise DataError(name, f"unknown file type '{suffix}': use .csv, .tsv, .jsonl or .parquet")
    try:
        frame = _read(path, suffix)
    except Exception as exc:  # pandas raises many types; the user needs one line
        raise DataError(name, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if frame.empty:
        raise DataError(name, "holds a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise DataError(name, f"missing column '{missing[0]}' (found: {found})")
    for column in required:
        frame[column] = frame[column].astype(str)
    return frame


def _line(path: Path, position: int) -> int:
    """Human line number of data row ``position`` (0-based)."""
    return position + 2 if path.suffix.lower() in (".csv", ".tsv", ".txt") else position + 1


def check_ids(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    """Reject empty ids, naming the first offending row."""
    for column in columns:
        values = frame[column].to_numpy()
        bad = np.flatnonzero((values == "") | (values == "nan"))
        if bad.size:
            raise DataError(str(path), "empty id", row=_line(path, int(bad[0])), column=column)


def check_numeric(frame: pd.DataFrame, path: Path, column: str, positive: bool) -> np.ndarray:
    """Column as float64; NaN, non-numeric or (when ``positive``) values <= 0 are errors."""
    numeric = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numeric))
    if bad.size:
        raw = frame[column].iloc[int(bad[0])]
        raise DataError(
            str(path), f"not a finite number: {raw!r}", row=_line(path, int(bad[0])), column=column
        )
    if positive:
        bad = np.flatnonzero(numeric <= 0)
        if bad.size:
            raise DataError(
                str(path),
                f"must be > 0, got {numeric[bad[0]]}",
                row=_line(path, int(bad[0])),
                column=column,
            )
    return numeric


def read_interactions(path: str | Path, rating_threshold: float | None = None) -> pd.DataFrame:
    """Interactions with columns ``user_id, item_id, weight`` (and ``timestamp`` if given).

    ``weight`` is the observed-entry weight W_ij when the file has it, else 1.0 (meaning
    "use WALS' w0 + r_i c_j"; see ``Dataset.weights``). With a ``rating`` column and a
    ``rating_threshold``, only rows with ``rating >= threshold`` are positives.
    Duplicate (user, item) pairs are merged: weights summed, latest timestamp kept.
    """
    path = Path(path)
    frame = read_table(path, INTERACTION_COLUMNS)
    check_ids(frame, path, INTERACTION_COLUMNS)
    frame["line"] = [_line(path, i) for i in range(len(frame))]
    has_weight = "weight" in frame.columns
    if has_weight:
        frame["weight"] = check_numeric(frame, path, "weight", positive=True)
    if "rating" in frame.columns:
        frame["rating"] = check_numeric(frame, path, "rating", positive=False)
        if rating_threshold is not None:
            frame = frame[frame["rating"] >= rating_threshold]
            if frame.empty:
                raise DataError(
                    str(path), f"no rating >= {rating_threshold}: lower rating_threshold"
                )
    if "timestamp" in frame.columns:
        frame["timestamp"] = check_numeric(frame, path, "timestamp", positive=False)
    if not has_weight:
        frame = frame.assign(weight=1.0)
    agg = {"weight": "sum", "line": "min"}
    if "timestamp" in frame.columns:
        agg["timestamp"] = "max"
    out = frame.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(agg)
    out.attrs["has_weight"] = has_weight
    out.attrs["path"] = str(path)
    return out


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Catalog with ``item_id`` and any text columns (title, genres, description, tags...).

    Duplicate ``item_id`` rows are an error: an item must have one text.
    """
    path = Path(path)
    frame = read_table(path, ("item_id",))
    check_ids(frame, path, ("item_id",))
    dup = frame["item_id"].duplicated().to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        raise DataError(
            str(path),
            f"duplicate item id {frame['item_id'].iloc[first]!r}",
            row=_line(path, first),
            column="item_id",
        )
    return frame.fillna("")
