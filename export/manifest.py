"""The bundle's manifest: format version, checksums, and the check the service runs on start.

Standard library only: the service imports this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "current"


class BundleError(RuntimeError):
    """A bundle that must not be served; the message is one line saying why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(bundle: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``bundle`` except the manifest."""
    table = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        if rel != MANIFEST:
            table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a bundles directory whose ``current`` pointer names one."""
    path = Path(path)
    if (path / CURRENT).exists() and not (path / MANIFEST).exists():
        path = path / CURRENT
    return path.resolve()


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """The manifest after checking format version and every file's sha256.

    Raises ``BundleError`` naming the first problem: missing manifest, other format
    version, missing file, or checksum mismatch.
    """
    bundle = resolve_bundle(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST}; is this a walrus bundle?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle}: format version {version}, this walrus reads {FORMAT_VERSION}; re-export it"
        )
    for rel, meta in manifest.get("files", {}).items():
        file = bundle / rel
        if not file.is_file():
            raise BundleError(f"{bundle}: {rel} is missing")
        if sha256_file(file) != meta["sha256"]:
            raise BundleError(f"{bundle}: {rel} is corrupt (sha256 differs from the manifest)")
    return manifest
