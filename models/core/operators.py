"""The filter vocabulary: which operators each kind of attribute takes, written once.

Pure Python (no numpy): the core's filters (``models.core.attributes``) apply it, and the
HTTP fronts, which hold no arrays, document it in the OpenAPI document.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["categorical", "tags", "numeric", "boolean"]
KINDS: tuple[Kind, ...] = ("categorical", "tags", "numeric", "boolean")
ITEM_ID = "item_id"
"""The filter on item ids: not an attribute, a field every bundle's filters take."""
OPERATORS: dict[str, tuple[str, ...]] = {
    "categorical": ("eq", "ne", "in", "not_in"),
    "boolean": ("eq", "ne", "in", "not_in"),
    "tags": ("any", "all", "none"),
    "numeric": ("gt", "gte", "lt", "lte"),
    ITEM_ID: ("in", "not_in"),
}
LIST_OPERATORS = frozenset({"in", "not_in", "any", "all", "none"})
"""Operators whose value is a non-empty list; the others take one value."""
NEGATIVE = {"ne": "eq", "not_in": "in", "none": "any"}
"""Each negative operator and the positive one it is the complement of."""
CAPPABLE: tuple[Kind, ...] = ("categorical", "boolean")
"""Kinds a diversity cap (``max_per_value``) can count: one value per item."""
