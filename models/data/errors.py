"""One error type for bad input files: a single line naming the file, row and column."""

from __future__ import annotations

from models.core.errors import WalrusError


class DataError(WalrusError, ValueError):
    """Bad input data. ``str(err)`` is one line that says where and what to fix.

    ``row`` counts lines of the file as a person sees them: the header is line 1, so the
    first data row of a CSV is line 2 (for JSONL and Parquet, the record number from 1).
    """

    def __init__(
        self, path: str, message: str, *, row: int | None = None, column: str | None = None
    ) -> None:
        where = path
        if row is not None:
            where += f", line {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.row = row
        self.column = column
