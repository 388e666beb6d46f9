"""The bundle format: the one contract between the export step and the service.

File names, the typed manifest (format version, files with sha256, index factory strings and
search parameters, parity figures, candidate sizes), and ``read_manifest``/``write_manifest``.
The export writes bundles and the service reads them only through this module. Standard
library and pydantic only.

Layout (paths relative to the bundle; ``manifest.json`` lists each with its sha256)::

    manifest.json                 this module's ``Manifest``
    user_ids.json item_ids.json   id maps (index order)
    items.json                    per item: item_id, title, popularity
    user_factors.npy              (n_users, wals_dim), memory-mappable
    item_factors.npy              (n_items, wals_dim) served factors: cold items ridge-mapped
    wals_item_factors.npy         (n_items, wals_dim) as WALS fitted them: fold-in solves here
    item_gramian.npy col_weights.npy  fold-in's Gramian and column weights
    cold_items.npy                (n_items,) bool: the cold rule of ``models.core.cold``
    seen_indptr.npy seen_indices.npy  each user's training items (CSR)
    item_text_embeddings.npy item_log_popularity.npy
    wals.faiss text.faiss         inner-product indexes (CPU format)
    encoder.onnx encoder.int8.onnx encoder.fp16.onnx head.onnx tokenizer.json
    tokenizer_config.json
    attributes.json attributes/   optional: item attributes (name, kind, values of each
                                  column) and their arrays (``models.core.attributes``)
    parity/                       texts and PyTorch reference outputs for ``--verify``

Bundles live in ``BUNDLES/<bundle_id>/``; ``BUNDLES/current`` is a symlink switched
atomically once a bundle is complete, so a reader never sees a half-written one. A published
bundle is never changed in place: its files are read-only (``seal``), and every load hashes
every file again, so one changed after publication is refused at its next load. A variant is
a new bundle (``writable_copy``, change it, give it a new id and file table).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from models.core.errors import WalrusError
from models.core.params import WALSParams

FORMAT_VERSION = 3
"""2: index factory strings and ParameterSpace search strings, the cold-item mask.
3: the head scores the pool features of ``models.core.features`` (ranks, cold flag)."""
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # export.signing: not listed in the manifest it signs
CURRENT = "current"
REBUILD = "rebuild it with `walrus export -c CONFIG`"


class Files:
    """Every file name of a bundle, for the writer and the reader alike."""

    USER_IDS = "user_ids.json"
    ITEM_IDS = "item_ids.json"
    ITEMS = "items.json"
    USER_FACTORS = "user_factors.npy"
    ITEM_FACTORS = "item_factors.npy"
    WALS_ITEM_FACTORS = "wals_item_factors.npy"
    ITEM_GRAMIAN = "item_gramian.npy"
    COL_WEIGHTS = "col_weights.npy"
    COLD_ITEMS = "cold_items.npy"
    SEEN_INDPTR = "seen_indptr.npy"
    SEEN_INDICES = "seen_indices.npy"
    ITEM_TEXT_EMBEDDINGS = "item_text_embeddings.npy"
    ITEM_LOG_POPULARITY = "item_log_popularity.npy"
    ENCODER: ClassVar[dict[str, str]] = {
        "fp32": "encoder.onnx",
        "int8": "encoder.int8.onnx",
        "fp16": "encoder.fp16.onnx",
    }
    HEAD = "head.onnx"
    TOKENIZER = "tokenizer.json"
    TOKENIZER_CONFIG = "tokenizer_config.json"
    PARITY_TEXTS = "parity/texts.json"
    PARITY_ENCODER = "parity/encoder_reference.npy"
    PARITY_HEAD_FEATURES = "parity/head_features.npy"
    PARITY_HEAD = "parity/head_reference.npy"

    # Optional: a bundle without it has no filterable fields. Its arrays are laid out by
    # models.core.attributes (to_arrays / from_arrays), under attributes/.
    ATTRIBUTES = "attributes.json"
    # Optional: the cold-start map (models.cold_start.RidgeMap), text embedding -> WALS
    # factors, which gives the items a bundle update adds their WALS vectors.
    COLD_START_COEF = "cold_start/coef.npy"
    COLD_START_INTERCEPT = "cold_start/intercept.npy"
    # Optional: items withdrawn by a bundle update, (n_items,) bool. They stay in every
    # array and index until a compaction, and no answer ever holds them.
    WITHDRAWN = "withdrawn.npy"

    @staticmethod
    def index(name: str) -> str:
        return f"{name}.faiss"


INDEXES = ("wals", "text")
"""The indexes a bundle holds, ``Files.index(name)`` each: the only names a manifest may use,
since the service opens a file for every one it lists."""

REQUIRED_FILES = (
    Files.USER_IDS,
    Files.ITEM_IDS,
    Files.ITEMS,
    Files.USER_FACTORS,
    Files.ITEM_FACTORS,
    Files.WALS_ITEM_FACTORS,
    Files.ITEM_GRAMIAN,
    Files.COL_WEIGHTS,
    Files.COLD_ITEMS,
    Files.SEEN_INDPTR,
    Files.SEEN_INDICES,
    Files.ITEM_TEXT_EMBEDDINGS,
    Files.ITEM_LOG_POPULARITY,
    Files.ENCODER["fp32"],
    Files.HEAD,
    Files.TOKENIZER,
    Files.TOKENIZER_CONFIG,
    *(Files.index(name) for name in INDEXES),
)
"""What the service loads whatever the settings: each must be listed in the manifest."""


class BundleError(WalrusError):
    """A bundle that must not be served; the message is one line saying why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    sha256: str
    bytes: int


class IndexEntry(_Model):
    kind: str
    factory: str
    search_params: str
    built_on: str
    recall_at_100: float
    size: int
    speedup_over_flat: float | None = None  # one query at a time, measured at export
    build_params: str | None = None  # "efConstruction=200"; None: a bundle that predates it


class Dims(_Model):
    wals: int
    text: int
    features: int


class Candidates(_Model):
    n_wals: int
    n_text: int
    cold_every: int = 0


class CatalogText(_Model):
    """How the catalog's rows became item texts (``models.core.catalog``), so that a bundle
    update turns new rows into texts the same way."""

    text_template: str | None = None
    attributes: list[str] = []  # the columns that are attributes, not text
    tag_separator: str = ","


class Lineage(_Model):
    """Where an updated bundle comes from: the full export it started from, and the
    updates since (``walrus bundle update``; a compaction starts a new count)."""

    exported: str
    updates: int = 0
    withdrawn: int = 0


class Manifest(_Model):
    """``manifest.json``: what a bundle holds and the figures it was checked with."""

    format_version: int
    bundle_id: str
    created_at: str
    counts: dict[str, int]
    dims: Dims
    encoder: dict[str, Any]
    wals: WALSParams  # what fold-in needs to solve as training did
    candidates: Candidates
    cold_items: int
    indexes: dict[str, IndexEntry]
    parity: dict[str, Any]
    packages: dict[str, str]
    files: dict[str, FileEntry]
    catalog: CatalogText | None = None  # None: made before bundle updates existed
    lineage: Lineage | None = None  # None: a full export, never updated
    # The config's [events.types]; None: made before typed events (the defaults apply).
    event_types: dict[str, float] | None = None

    @field_validator("indexes")
    @classmethod
    def _the_format_s_indexes(cls, value: dict[str, IndexEntry]) -> dict[str, IndexEntry]:
        if set(value) != set(INDEXES):
            raise ValueError(f"must name exactly the indexes {', '.join(INDEXES)}")
        return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(bundle: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file under ``bundle`` except the manifest and its signature."""
    table = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        if rel not in (MANIFEST, SIGNATURE):
            table[rel] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return table


READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def seal(bundle: Path) -> None:
    """Make every file of a finished bundle read-only (0444): publishing is the last write."""
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(READ_ONLY)


def writable_copy(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` whose files may be changed (file contents only, not the sealed
    modes): the start of a variant, which is published as a bundle of its own."""
    shutil.copytree(bundle, dest, copy_function=shutil.copyfile)
    return dest


def new_bundle_id() -> str:
    """A new version's id: its UTC creation time, then 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def switch_current(bundles_dir: Path, bundle_id: str) -> None:
    """Point ``bundles_dir/current`` at ``bundle_id`` with one atomic rename."""
    tmp = bundles_dir / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(bundle_id)
    os.replace(tmp, bundles_dir / CURRENT)


def write_manifest(bundle: Path, manifest: Manifest) -> None:
    (bundle / MANIFEST).write_text(manifest.model_dump_json(indent=2))


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a bundles directory whose ``current`` pointer names one.
    ``BundleError`` when ``current`` points at a version that does not exist."""
    path = Path(path)
    current = path / CURRENT
    if current.is_symlink() and not current.exists():
        raise BundleError(
            f"{current} points to {os.readlink(current)}, which does not exist; "
            "export a bundle or point the link at an existing one"
        )
    if current.exists() and not (path / MANIFEST).exists():
        path = current
    return path.resolve()


def _inside(bundle: Path, rel: str) -> bool:
    """A manifest entry names a file inside the bundle: relative, no ``..``, and no link
    leading out of it."""
    name = Path(rel)
    if name.is_absolute() or ".." in name.parts or not name.parts:
        return False
    target = (bundle / name).resolve()
    return target == bundle or bundle in target.parents


def read_manifest(bundle: str | Path) -> Manifest:
    """The manifest after checking format version, its fields, that every file the service
    loads is listed, and every listed file's sha256.

    Raises ``BundleError`` naming the first problem.
    """
    bundle = resolve_bundle(bundle)
    manifest = parse_manifest(bundle)
    _check_files(bundle, manifest)
    return manifest


def parse_manifest(bundle: Path) -> Manifest:
    """``bundle``'s manifest checked on its own: valid JSON, this format version, its fields,
    every file the service loads listed, every name inside the bundle. The files it lists are
    not read: a bundle being downloaded (``export.remote``) is checked this far first.

    Raises ``BundleError`` naming the first problem.
    """
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST}; is this a walrus bundle?")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle}: format version {version}, this walrus reads {FORMAT_VERSION}; {REBUILD}"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BundleError(f"{path}: {where}: {err['msg']}; {REBUILD}") from None
    unlisted = [name for name in REQUIRED_FILES if name not in manifest.files]
    if unlisted:
        raise BundleError(f"{bundle}: the manifest does not list {unlisted[0]}; {REBUILD}")
    outside = [rel for rel in manifest.files if not _inside(bundle, rel)]
    if outside:
        raise BundleError(f"{bundle}: the manifest names {outside[0]!r}, outside the bundle")
    return manifest


def _check_files(bundle: Path, manifest: Manifest) -> None:
    """Every listed file present and intact; nothing else in the bundle."""
    for rel, meta in manifest.files.items():
        file = bundle / rel
        if not file.is_file():
            raise BundleError(f"{bundle}: {rel} is missing")
        if sha256_file(file) != meta.sha256:
            raise BundleError(f"{bundle}: {rel} is corrupt (sha256 differs from the manifest)")
    unlisted_files = [
        rel
        for path in sorted(bundle.rglob("*"))
        if not path.is_dir()
        and (rel := path.relative_to(bundle).as_posix()) not in manifest.files
        and rel not in (MANIFEST, SIGNATURE)
    ]
    if unlisted_files:
        # Nothing unhashed is ever opened: ONNX external data, a planted index, a link.
        raise BundleError(
            f"{bundle}: {unlisted_files[0]} is in the bundle but not in the manifest; {REBUILD}"
        )
