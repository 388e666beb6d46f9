"""Bundles for tests that change them: a bundles folder of its own, and new catalog rows."""

from __future__ import annotations

from pathlib import Path

from export.format import switch_current, writable_copy
from export.update import CatalogChange, update_bundle

NEW = [
    {
        "item_id": "new-1",
        "title": "Zanzibar quokka submarine",
        "description": "A zanzibar quokka submarine voyage.",
        "tags": "quokka",
        "topic": "space",
        "year": "2031",
        "price": "9.5",
        "in_stock": "true",
    },
    {
        "item_id": "new-2",
        "title": "Zanzibar quokka submarine, vol. 2",
        "description": "A zanzibar quokka submarine voyage.",
        "tags": "quokka",
        "topic": "brand new topic",
        "year": "",
        "price": "3",
        "in_stock": "no",
    },
]


def bundles_of(bundle: Path, tmp_path: Path) -> Path:
    """A bundles folder of its own whose current is a copy of ``bundle``."""
    root = tmp_path / "bundles"
    root.mkdir()
    writable_copy(bundle, root / bundle.name)
    switch_current(root, bundle.name)
    return root


def two_versions(bundle: Path, tmp_path: Path) -> tuple[Path, str]:
    """A bundles folder whose current is a copy of ``bundle``, and the id of a second
    version beside it (``bundle`` plus the ``NEW`` rows): an experiment's candidate."""
    root = bundles_of(bundle, tmp_path)
    candidate = update_bundle(root, CatalogChange(NEW, []))
    switch_current(root, bundle.name)
    return root, candidate.name
