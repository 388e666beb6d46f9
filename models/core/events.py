"""Event types and their weights: one definition for serving (which events a user's next
answer folds in, and how strongly) and training (``walrus data events``).

A config declares its types in ``[events.types]`` (name = weight); the export writes them
into the bundle's manifest, so the service weighs events as the model's own training did.
A weight of 0 marks an exposure, not an interaction: an impression is counted online (it is
the denominator of a click-through rate) but never folded in nor trained on.
"""

from __future__ import annotations

import re

DEFAULT_EVENT_TYPES: dict[str, float] = {"impression": 0.0, "click": 1.0, "purchase": 4.0}
"""Personalize's and Retail's usual three. A purchase weighs as four clicks: a stronger,
rarer signal (change it per catalog in the config)."""

UNTYPED_WEIGHT = 1.0  # an event without a type: one interaction, as before types existed
MAX_WEIGHT = 1000.0
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def event_weight(kind: str | None, given: float | None, types: dict[str, float]) -> float:
    """An event's weight: the one it carries, else its type's, else an untyped event's.
    ``KeyError`` for a type ``types`` does not declare."""
    if given is not None:
        return given
    return UNTYPED_WEIGHT if kind is None else types[kind]


def check_types(types: dict[str, float]) -> dict[str, float]:
    """``ValueError`` naming the first bad name or weight."""
    for name, weight in types.items():
        if not TYPE_NAME.match(name):
            raise ValueError(f"event type {name!r}: lower-case letters, digits and _ (<= 32)")
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"event type {name!r}: weight must be in [0, {MAX_WEIGHT:g}]")
    return types
