"""A live catalog: new bundle versions with items added and withdrawn, in seconds, without
training or a full export (``walrus bundle update``), and the compaction that rebuilds them
cleanly (``walrus bundle compact``).

An update starts from the bundle ``current`` names and writes a new one beside it:

- added items: their texts made from their catalog rows by the training's own rule
  (``models.core.catalog``, with the template the manifest records), encoded by the bundle's
  own fp32 ONNX encoder (no torch: it runs in the serving image), their WALS factors from the
  cold-start map the bundle ships (``models.cold_start``), appended to both FAISS indexes,
  the arrays, the id map, the titles and the attributes (new values join the end of each
  vocabulary, so old codes keep their meaning); they are cold items, as training would
  call an item without interactions;
- withdrawn items: marked in ``withdrawn.npy`` (a tombstone), which the service adds to every
  request's exclusions, so no answer holds them; they stay in the arrays and indexes until
  a compaction drops them (removing from an HNSW graph is not possible in FAISS, and a
  tombstone keeps every other item's index, and so every user's seen list, unchanged);
- every file the update does not change (user factors, seen lists, the ONNX models, the
  parity references) is a hard link to the previous version's: the new version costs the
  disk of the files that changed. Their hashes are taken from the previous manifest (same
  inode, same bytes), the changed files are hashed, and the new bundle is checked like any
  other (``read_manifest``, ``load_bundle``) before ``current`` moves to it.

A compaction (after ``compact_after`` updates, when a tenth of the items are withdrawn, or
on request) drops the withdrawn items everywhere (arrays, attributes, seen lists re-indexed)
and rebuilds both indexes from their recorded factory strings, with their recall measured
again. The WALS model itself (user factors, Gramian) is the trained one throughout: new
interactions reach it only through the next training run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from export.faiss_index import ann_recall, build_from_factory, build_params
from export.format import (
    BundleError,
    CatalogText,
    FileEntry,
    Files,
    Lineage,
    Manifest,
    new_bundle_id,
    read_manifest,
    resolve_bundle,
    sha256_file,
    switch_current,
    utc_now,
)
from export.runtime import OnnxTextEncoder
from export.signing import finish
from models.artifacts import atomic_directory
from models.cold_start import RidgeMap
from models.config import IndexConfig
from models.core.attributes import Column, array_names, from_arrays, to_arrays
from models.core.catalog import item_text, item_title, text_columns
from models.core.columns import CellError, append_rows, keep_rows, parse_column
from models.core.fold_in import weights_from_counts

COMPACT_AFTER = 10
"""Updates after which an update compacts the bundle as well."""
COMPACT_WITHDRAWN_SHARE = 0.1
"""A withdrawn share of the items above which an update compacts as well."""
RECALL_QUERIES = 1000
PER_ITEM = (
    Files.ITEM_FACTORS,
    Files.WALS_ITEM_FACTORS,
    Files.ITEM_TEXT_EMBEDDINGS,
    Files.ITEM_LOG_POPULARITY,
    Files.COLD_ITEMS,
    Files.COL_WEIGHTS,
    Files.WITHDRAWN,
)
ENCODE_BATCH = 64


class UpdateError(BundleError):
    """A catalog change that cannot be applied; the message says what to fix."""


@dataclass(frozen=True)
class CatalogChange:
    """Rows of new items (catalog columns, as in the training catalog) and ids to withdraw."""

    added: list[dict[str, str]]
    withdrawn: list[str]
    source: str = "the added items"


def read_change(add: Path | None, remove: Path | None) -> CatalogChange:
    """A CSV of new catalog rows (``item_id`` and the catalog's other columns) and a text
    file of item ids to withdraw, one per line."""
    added: list[dict[str, str]] = []
    if add is not None:
        with add.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "item_id" not in (reader.fieldnames or []):
                raise UpdateError(f"{add}: no item_id column; give the catalog's columns")
            added = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    withdrawn: list[str] = []
    if remove is not None:
        lines = remove.read_text(encoding="utf-8").splitlines()
        withdrawn = [line.strip() for line in lines if line.strip()]
    if not added and not withdrawn:
        raise UpdateError("nothing to do: give --add with new items and/or --remove with ids")
    return CatalogChange(added, withdrawn, str(add))


@dataclass
class Version:
    """A bundle version being written over the version at ``source``: the files it changes,
    by name. Every read goes through it (``array``, ``text``, ``rows``, ``attributes``): what
    this version changed, else the file ``source`` holds."""

    source: Path
    manifest: Manifest
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # JSON files
    indexes: dict[str, Any] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)  # files the new version no longer has

    @property
    def n_items(self) -> int:
        return self.manifest.counts["items"]

    def array(self, name: str) -> np.ndarray:
        return self.arrays[name] if name in self.arrays else np.load(self.source / name)

    def text(self, name: str) -> str:
        return self.texts[name] if name in self.texts else (self.source / name).read_text()

    def rows(self, name: str) -> list[Any]:
        rows: list[Any] = json.loads(self.text(name))
        return rows

    def withdrawn(self) -> np.ndarray:
        """The tombstone mask: every item False in a version that never withdrew one."""
        if Files.WITHDRAWN in self.arrays or Files.WITHDRAWN in self.manifest.files:
            return np.array(self.array(Files.WITHDRAWN), dtype=bool)
        return np.zeros(self.n_items, dtype=bool)

    def attributes(self) -> list[Column] | None:
        """The item attributes, as columns; None for a bundle without them."""
        if Files.ATTRIBUTES not in self.manifest.files:
            return None
        description = json.loads(self.text(Files.ATTRIBUTES))
        arrays = {name: self.array(name) for name in array_names(description)}
        return from_arrays(description, arrays, self.n_items)

    def set_attributes(self, columns: list[Column]) -> None:
        described, arrays = to_arrays(columns)
        self.texts[Files.ATTRIBUTES] = json.dumps(described)
        self.arrays.update(arrays)

    def changed(self) -> set[str]:
        return set(self.arrays) | set(self.texts) | {Files.index(n) for n in self.indexes}

    def linked(self, rel: str) -> bool:
        """Whether the previous version's file ``rel`` is the new version's too."""
        changed = self.changed()
        rewritten = rel.startswith("attributes/") and Files.ATTRIBUTES in changed
        return rel not in changed and rel not in self.dropped and not rewritten

    def check(self) -> None:
        """Every per-item array and index the version changed has one row per item: an
        update that would fail the service's size checks is never published."""
        n = self.n_items
        for name, array in self.arrays.items():
            if name in PER_ITEM and len(array) != n:
                raise BundleError(f"{name} has {len(array)} rows, not {n}: a bug in the update")
        for name, index in self.indexes.items():
            if index.ntotal != n:
                raise BundleError(f"index {name} holds {index.ntotal} items, not {n}")

    # ------------------------------------------------------------ an update
    def add_items(self, change: CatalogChange, ids: list[str]) -> None:
        """The new items' rows appended to every per-item file and both indexes."""
        rule = self.manifest.catalog or CatalogText()
        columns = list(change.added[0])
        texts = [
            item_text(row, rule.text_template, text_columns(columns, rule.attributes))
            for row in change.added
        ]
        vectors = encode(self.source, texts)
        ridge = RidgeMap(0.0)
        ridge.coef = self.array(Files.COLD_START_COEF)
        ridge.intercept = self.array(Files.COLD_START_INTERCEPT)
        factors = ridge.predict(vectors)
        n = len(texts)
        for name, rows in (
            (Files.ITEM_FACTORS, factors),
            # Fold-in solves against these: an added item has no fitted factors, so a
            # user's events on it count through its mapped ones.
            (Files.WALS_ITEM_FACTORS, factors),
            (Files.ITEM_TEXT_EMBEDDINGS, vectors),
            (Files.ITEM_LOG_POPULARITY, np.zeros(n)),
            (Files.COLD_ITEMS, np.ones(n, dtype=bool)),
            # c_j as for an item seen once: a user's events on it then weigh in fold-in.
            (Files.COL_WEIGHTS, np.full(n, once_seen(self.manifest))),
        ):
            old = self.array(name)
            self.arrays[name] = np.concatenate([old, rows.astype(old.dtype)])
        items = self.rows(Files.ITEMS) + [
            {"item_id": row["item_id"], "title": item_title(row), "popularity": 0}
            for row in change.added
        ]
        self.texts[Files.ITEMS] = json.dumps(items)
        self.texts[Files.ITEM_IDS] = json.dumps(ids)
        for name, rows in (("wals", factors), ("text", vectors)):
            index = faiss.read_index(str(self.source / Files.index(name)))
            index.add(np.ascontiguousarray(rows, dtype=np.float32))
            self.indexes[name] = index
        self.append_attributes(change)

    def append_attributes(self, change: CatalogChange) -> None:
        """The added rows' attribute cells parsed and appended (new values join the end of
        each vocabulary, so old codes keep their meaning)."""
        old = self.attributes()
        if old is None:
            return
        separator = (self.manifest.catalog or CatalogText()).tag_separator
        columns = []
        for column in old:
            cells = [row.get(column.name, "") for row in change.added]
            try:
                new = parse_column(column.name, column.kind, cells, separator)
            except CellError as exc:
                raise UpdateError(f"{change.source}: row {exc.row + 2}: {exc}") from None
            columns.append(append_rows(column, new))
        self.set_attributes(columns)

    # ------------------------------------------------------------ a compaction
    def compacted(self) -> Version:
        """This version without its withdrawn items, every per-item file re-indexed, the
        seen lists too, and both indexes rebuilt as the manifest records them."""
        n = self.n_items
        keep = np.flatnonzero(~self.withdrawn())
        arrays = {name: self.array(name)[keep] for name in PER_ITEM if name != Files.WITHDRAWN}
        arrays.update(
            reindexed_seen(self.array(Files.SEEN_INDPTR), self.array(Files.SEEN_INDICES), keep, n)
        )
        texts = {name: kept(self.rows(name), keep) for name in (Files.ITEMS, Files.ITEM_IDS)}
        out = Version(self.source, self.manifest, arrays, texts, dropped={Files.WITHDRAWN})
        columns = self.attributes()
        if columns is not None:
            out.set_attributes([keep_rows(column, keep) for column in columns])
        out.indexes, entries = rebuilt_indexes(self.manifest, arrays)
        lineage = self.manifest.lineage or Lineage(exported=self.manifest.bundle_id)
        out.manifest = self.manifest.model_copy(
            update={
                "counts": {**self.manifest.counts, "items": len(keep)},
                "cold_items": int(arrays[Files.COLD_ITEMS].sum()),
                "indexes": entries,
                "lineage": Lineage(exported=lineage.exported, updates=0, withdrawn=0),
            }
        )
        return out


def update_bundle(
    bundles_dir: Path,
    change: CatalogChange,
    sign_with: Path | None = None,
    compact_after: int = COMPACT_AFTER,
    progress: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Apply ``change`` to the bundle ``current`` names; the new version becomes current
    (compacted, when due). ``UpdateError`` for a change that does not fit the bundle."""
    source = resolve_bundle(bundles_dir)
    manifest = read_manifest(source)
    if manifest.catalog is None or Files.COLD_START_COEF not in manifest.files:
        raise UpdateError(
            f"{source} predates bundle updates (no catalog rule or cold-start map); "
            "re-export it with `walrus export -c CONFIG`"
        )
    progress(f"{len(change.added)} to add, {len(change.withdrawn)} to withdraw")
    version = changed_version(Version(source, manifest), change, progress)
    lineage = version.manifest.lineage
    if lineage is not None and (
        lineage.updates >= compact_after
        or lineage.withdrawn > COMPACT_WITHDRAWN_SHARE * version.n_items
    ):
        progress("compacting")
        version = version.compacted()
    progress("writing")
    return publish(bundles_dir, version, sign_with)


def compact_bundle(
    bundles_dir: Path,
    sign_with: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Path:
    """A compacted version of the bundle ``current`` names, made current."""
    source = resolve_bundle(bundles_dir)
    current = Version(source, read_manifest(source))
    progress("compacting")
    return publish(bundles_dir, current.compacted(), sign_with)


def changed_version(
    version: Version, change: CatalogChange, progress: Callable[[str], None]
) -> Version:
    """``version`` (the source, unchanged) with ``change`` applied."""
    ids: list[str] = version.rows(Files.ITEM_IDS)
    withdrawn = version.withdrawn()
    position = {item: i for i, item in enumerate(ids)}
    new_ids = check_change(change, position, withdrawn)
    n_old, n_new = len(ids), len(new_ids)
    for item in change.withdrawn:
        withdrawn[position[item]] = True
    version.arrays[Files.WITHDRAWN] = np.concatenate([withdrawn, np.zeros(n_new, dtype=bool)])
    if n_new:
        progress(f"encoding {n_new} texts")
        version.add_items(change, ids + new_ids)
    manifest = version.manifest
    lineage = manifest.lineage or Lineage(exported=manifest.bundle_id)
    version.manifest = manifest.model_copy(
        update={
            "counts": {**manifest.counts, "items": n_old + n_new},
            "cold_items": manifest.cold_items + n_new,
            "lineage": Lineage(
                exported=lineage.exported,
                updates=lineage.updates + 1,
                withdrawn=int(withdrawn.sum()),
            ),
        }
    )
    return version


def check_change(
    change: CatalogChange, position: dict[str, int], withdrawn: np.ndarray
) -> list[str]:
    """The new item ids, after checking the change fits the bundle."""
    new_ids = [row["item_id"] for row in change.added]
    if any(not item for item in new_ids):
        raise UpdateError(f"{change.source}: an item without an item_id")
    if len(set(new_ids)) != len(new_ids):
        raise UpdateError(f"{change.source}: an item_id appears twice")
    present = [item for item in new_ids if item in position]
    if present:
        raise UpdateError(f"{change.source}: item {present[0]!r} is in the bundle already")
    unknown = [item for item in change.withdrawn if item not in position]
    if unknown:
        raise UpdateError(f"cannot withdraw {unknown[0]!r}: the bundle has no such item")
    gone = [item for item in change.withdrawn if withdrawn[position[item]]]
    if gone:
        raise UpdateError(f"cannot withdraw {gone[0]!r}: withdrawn already")
    return new_ids


def encode(source: Path, texts: list[str]) -> np.ndarray:
    """Texts as the bundle's fp32 encoder embeds them (what the export embedded items with,
    within its parity tolerance), in batches of similar lengths."""
    config = json.loads((source / Files.TOKENIZER_CONFIG).read_text())
    encoder = OnnxTextEncoder(
        source / Files.ENCODER["fp32"], source / Files.TOKENIZER, int(config["max_length"])
    )
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), ENCODE_BATCH):
        rows = order[start : start + ENCODE_BATCH]
        out[rows] = encoder.encode([texts[i] for i in rows])
    return out


def kept(rows: list[Any], keep: np.ndarray) -> str:
    return json.dumps([rows[i] for i in keep.tolist()])


def once_seen(manifest: Manifest) -> float:
    p = manifest.wals
    weights = weights_from_counts(np.ones(1), p.col_weights, p.weight_scale, p.weight_exponent)
    return float(weights[0])


def reindexed_seen(
    indptr: np.ndarray, indices: np.ndarray, keep: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """Each user's seen items in the kept items' new indices, the withdrawn ones dropped."""
    new_index = np.full(n, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    mapped = new_index[np.asarray(indices)]
    kept = mapped >= 0
    owners = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    counts = np.bincount(owners[kept], minlength=len(indptr) - 1)
    return {
        Files.SEEN_INDPTR: np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        Files.SEEN_INDICES: mapped[kept].astype(np.asarray(indices).dtype),
    }


def rebuilt_indexes(
    manifest: Manifest, arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both indexes built again as the manifest records them (factory, search and build
    parameters), recall@100 measured again against exact search on a sample of the items."""
    indexes, entries = {}, {}
    rng = np.random.default_rng(0)
    for name, vectors in (
        ("wals", arrays[Files.ITEM_FACTORS]),
        ("text", arrays[Files.ITEM_TEXT_EMBEDDINGS]),
    ):
        entry = manifest.indexes[name]
        params = entry.build_params
        if params is None:  # a bundle from before build parameters were recorded
            params = build_params(entry.kind, IndexConfig())
        built = build_from_factory(vectors, entry.kind, entry.factory, entry.search_params, params)
        sample = vectors[rng.choice(len(vectors), min(RECALL_QUERIES, len(vectors)), False)]
        recall = ann_recall(built.index, vectors, sample)
        indexes[name] = built.index
        entries[name] = entry.model_copy(
            update={
                "size": len(vectors),
                "recall_at_100": recall,
                "built_on": built.built_on,
                "build_params": params,
            }
        )
    return indexes, entries


# ---------------------------------------------------------------- publishing


def publish(bundles_dir: Path, version: Version, sign_with: Path | None) -> Path:
    """Write the version beside its source (unchanged files hard-linked), check it as the
    service will, and make it current."""
    source = version.source
    bundle_id = new_bundle_id()
    final = bundles_dir / bundle_id
    old = version.manifest.files
    changed = version.changed()
    version.check()
    with atomic_directory(final) as tmp:
        files: dict[str, FileEntry] = {}
        for rel, entry in old.items():
            if version.linked(rel):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(source / rel, tmp / rel)
                files[rel] = entry
        for rel in sorted(changed):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel in version.arrays:
                np.save(tmp / rel, np.ascontiguousarray(version.arrays[rel]))
            elif rel in version.texts:
                (tmp / rel).write_text(version.texts[rel])
        for name, index in version.indexes.items():
            faiss.write_index(index, str(tmp / Files.index(name)))
        for rel in changed:
            files[rel] = FileEntry(sha256=sha256_file(tmp / rel), bytes=(tmp / rel).stat().st_size)
            if rel in old and old[rel].sha256 == files[rel].sha256:  # rewritten, not changed
                (tmp / rel).unlink()
                os.link(source / rel, tmp / rel)
        manifest = version.manifest.model_copy(
            update={
                "bundle_id": bundle_id,
                "created_at": utc_now(),
                "indexes": {
                    name: entry.model_copy(update={"size": version.manifest.counts["items"]})
                    for name, entry in version.manifest.indexes.items()
                },
                "files": dict(sorted(files.items())),
            }
        )
        finish(tmp, manifest, sign_with)
    switch_current(bundles_dir, bundle_id)
    return final
