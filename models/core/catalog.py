"""An item's text and title from its catalog row: one rule for training, export and the
bundle updates that add items to a served catalog (``export.update``). Standard library
only: the serving image runs it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

DEFAULT_SEPARATOR = ". "


def item_text(row: Mapping[str, str], template: str | None, text_columns: Sequence[str]) -> str:
    """The one text of an item.

    With a ``template`` (``str.format`` syntax, e.g. ``"{title}. {genres}. Tags: {tags}"``) the
    fields are substituted; without one, the non-empty ``text_columns`` are joined by ". ".
    Runs of whitespace collapse to one space either way.
    """
    if template is not None:
        text = template.format(**row)
    else:
        text = DEFAULT_SEPARATOR.join(
            str(row[c]).strip() for c in text_columns if str(row[c]).strip()
        )
    return re.sub(r"\s+", " ", text).strip()


def text_columns(columns: Sequence[str], attributes: Sequence[str]) -> list[str]:
    """Without a template, an item's text is every catalog column but its id and the
    columns declared as attributes, in the catalog's order."""
    return [c for c in columns if c != "item_id" and c not in attributes]


def item_title(row: Mapping[str, str]) -> str:
    """The ``title`` column, else the item's id."""
    return str(row.get("title", row["item_id"]))
