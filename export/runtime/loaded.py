"""A bundle read into typed arrays, its indexes and its ONNX models, cross-checked: the one
object the service asks for (``load_bundle``), so only this module knows the bundle's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from export.format import REBUILD, BundleError, Files, Manifest, read_manifest, resolve_bundle
from export.runtime.hardware import (
    DevicePreference,
    onnx_providers,
    require_faiss_gpu,
    require_providers,
)
from export.runtime.index import ServedIndexes, load_index
from export.runtime.parity import verify_bundle
from export.runtime.sessions import OnnxHead, OnnxTextEncoder
from export.signing import check_signature, load_public_keys
from models.core.attributes import ItemAttributes, array_names, from_arrays
from models.core.fold_in import fold_in_user
from models.core.ids import CompactIds
from models.core.types import ItemTables

log = logging.getLogger(__name__)

EncoderPrecision = Literal["auto", "fp32", "int8", "fp16"]


@dataclass(frozen=True)
class LoadOptions:
    """How to load a bundle on this machine."""

    device: DevicePreference = "auto"
    encoder_precision: EncoderPrecision = "auto"  # auto: fp16 on CUDA, int8 on the CPU
    threads: int = 0  # FAISS and onnxruntime threads; 0 lets each choose
    verify_parity: bool = False  # re-run the parity check before serving
    # Encoder sessions, one per thread that encodes at once: two sessions of one thread
    # encode 12% more than two runs sharing one session (docs/benchmarks.md).
    encoder_sessions: int = 1
    trusted_keys: Path | None = None  # a .pub file or a folder of them: unsigned is refused


@dataclass(frozen=True)
class SeenLists:
    """Each user's training items, CSR: user u's are ``indices[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    indices: np.ndarray

    def row(self, user: int) -> np.ndarray:
        return np.asarray(self.indices[self.indptr[user] : self.indptr[user + 1]], np.int64)


@dataclass
class LoadedBundle:
    """Everything loaded from one bundle. Read-only once loaded: safe across threads."""

    path: Path
    manifest: Manifest
    users: CompactIds  # 10M ids without 10M Python objects
    items: CompactIds
    titles: list[str]
    user_factors: np.ndarray  # (n_users, wals_dim), memory-mapped
    wals_item_factors: np.ndarray  # as WALS fitted them: fold-in solves against these
    gramian: np.ndarray
    col_weights: np.ndarray
    seen: SeenLists
    tables: ItemTables
    indexes: ServedIndexes
    encoders: list[OnnxTextEncoder]  # the same model, one session each
    encoder_precision: str
    head: OnnxHead
    attributes: ItemAttributes  # no columns when the bundle has none
    withdrawn: np.ndarray  # item indices a bundle update withdrew: never in an answer

    @property
    def encoder(self) -> OnnxTextEncoder:
        return self.encoders[0]

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    def fold_in(self, items: np.ndarray) -> np.ndarray:
        """A user vector from item indices, with the weights WALS trained with."""
        return fold_in_user(
            self.wals_item_factors, self.gramian, self.col_weights, self.manifest.wals, items
        )

    def check_sizes(self) -> None:
        """Files that are each intact can still disagree with each other (a bundle assembled
        by hand, a partial copy): every array, index and model is cross-checked against the
        id maps and the manifest's dimensions. ``BundleError`` names the first mismatch."""
        for what, got, expected in self._sizes():
            if isinstance(got, int) and got != expected:  # ONNX may name a dim, not size it
                raise BundleError(f"{self.path}: {what} is {got}, expected {expected}")
        self._check_seen_range()

    def _check_seen_range(self) -> None:
        """Every seen item is an item of the bundle and the offsets never go back: one wrong
        index would fail every request of that user (or, at worst, read past an array)."""
        indices, indptr = self.seen.indices, self.seen.indptr
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self.items)):
            raise BundleError(
                f"{self.path}: seen item indices span {int(indices.min())}.."
                f"{int(indices.max())}, outside the {len(self.items)} items"
            )
        if len(indptr) and (int(indptr[0]) != 0 or bool((np.diff(indptr) < 0).any())):
            raise BundleError(f"{self.path}: seen list offsets do not start at 0 and rise")

    def _sizes(self) -> list[tuple[str, object, int]]:
        n_users, n_items, dims, tables = (
            len(self.users),
            len(self.items),
            self.manifest.dims,
            self.tables,
        )
        return [
            ("titles in items.json", len(self.titles), n_items),
            ("user factor rows", self.user_factors.shape[0], n_users),
            ("seen list offsets", len(self.seen.indptr), n_users + 1),
            ("seen lists' end offset", int(self.seen.indptr[-1]), len(self.seen.indices)),
            ("item factor rows", tables.n_items, n_items),
            ("item text embedding rows", tables.item_text_embeddings.shape[0], n_items),
            ("WALS item factor rows", self.wals_item_factors.shape[0], n_items),
            ("cold item flags", len(tables.item_cold), n_items),
            ("item factor width", tables.item_factors.shape[1], dims.wals),
            ("user factor width", self.user_factors.shape[1], dims.wals),
            ("gramian rows", self.gramian.shape[0], dims.wals),
            ("gramian columns", self.gramian.shape[1], dims.wals),
            ("column weights", len(self.col_weights), n_items),
            ("item popularity entries", len(tables.item_log_popularity), n_items),
            ("text embedding width", tables.item_text_embeddings.shape[1], dims.text),
            ("encoder output width", self.encoder.dim, dims.text),
            ("head input width", self.head.session.get_inputs()[0].shape[-1], dims.features),
            *(
                (f"{name} index size", ix.ntotal, n_items)
                for name, ix in self.indexes.indexes.items()
            ),
        ]


def load_bundle(bundle: str | Path, options: LoadOptions = LoadOptions()) -> LoadedBundle:
    """Read, check (manifest, every sha256, sizes; parity when asked) and load a bundle.
    The large arrays are memory-mapped: pages load when a request touches them, and
    several processes on one machine share them."""
    p = resolve_bundle(bundle)
    if options.trusted_keys is not None:  # before anything in the bundle is believed
        signer = check_signature(p, load_public_keys(options.trusted_keys))
        log.info("%s: signed by trusted key %s", p.name, signer)
    manifest = read_manifest(p)  # format version, file list and every sha256
    if options.verify_parity:
        verify_bundle(p)

    def array(name: str) -> np.ndarray:
        return np.asarray(np.load(p / name, mmap_mode="r"))

    if options.threads:
        faiss.omp_set_num_threads(options.threads)
    encoders, precision = load_encoders(p, manifest, options)
    loaded = LoadedBundle(
        path=p,
        manifest=manifest,
        users=CompactIds.load(p / Files.USER_IDS),
        items=CompactIds.load(p / Files.ITEM_IDS),
        titles=[it["title"] for it in json.loads((p / Files.ITEMS).read_text())],
        user_factors=array(Files.USER_FACTORS),
        wals_item_factors=array(Files.WALS_ITEM_FACTORS),
        gramian=np.load(p / Files.ITEM_GRAMIAN),
        col_weights=np.load(p / Files.COL_WEIGHTS),
        seen=SeenLists(array(Files.SEEN_INDPTR), array(Files.SEEN_INDICES)),
        tables=ItemTables(
            array(Files.ITEM_FACTORS),
            array(Files.ITEM_TEXT_EMBEDDINGS),
            np.load(p / Files.ITEM_LOG_POPULARITY),
            np.load(p / Files.COLD_ITEMS),
        ),
        indexes=load_indexes(p, manifest, options),
        encoders=encoders,
        encoder_precision=precision,
        # The head is a 2-layer MLP over a few hundred rows: a GPU round trip costs more
        # than it saves, so it always runs on the CPU.
        head=OnnxHead(p / Files.HEAD, ["CPUExecutionProvider"], options.threads),
        attributes=load_attributes(p, manifest),
        withdrawn=load_withdrawn(p, manifest),
    )
    loaded.check_sizes()
    return loaded


def load_withdrawn(p: Path, manifest: Manifest) -> np.ndarray:
    """The withdrawn items' indices (int64, ascending); none without withdrawn.npy."""
    if Files.WITHDRAWN not in manifest.files:
        return np.zeros(0, dtype=np.int64)
    mask = np.load(p / Files.WITHDRAWN)
    if mask.shape != (manifest.counts["items"],) or mask.dtype != bool:
        raise BundleError(f"{p}: {Files.WITHDRAWN} is not one bool per item; {REBUILD}")
    return np.flatnonzero(mask).astype(np.int64)


def load_attributes(p: Path, manifest: Manifest) -> ItemAttributes:
    """The bundle's item attributes with their bitmaps; none when it has no attributes.json.
    Every array it names must be listed (and so hashed) in the manifest."""
    n_items = manifest.counts["items"]
    if Files.ATTRIBUTES not in manifest.files:
        return ItemAttributes(n_items, [])
    description = json.loads((p / Files.ATTRIBUTES).read_text())
    names = array_names(description)
    unlisted = [name for name in names if name not in manifest.files]
    if unlisted:
        raise BundleError(f"{p}: {unlisted[0]} is named by attributes.json but not listed")
    try:
        arrays = {name: np.load(p / name) for name in names}
        return ItemAttributes(n_items, from_arrays(description, arrays, n_items))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{p}: {Files.ATTRIBUTES}: {exc}; {REBUILD}") from exc


def load_indexes(p: Path, manifest: Manifest, options: LoadOptions) -> ServedIndexes:
    require_faiss_gpu(options.device)
    return ServedIndexes(
        {
            name: load_index(
                p / Files.index(name),
                entry.kind,
                entry.search_params,
                use_gpu=options.device != "cpu",
            )
            for name, entry in manifest.indexes.items()
        }
    )


def load_encoders(
    p: Path, manifest: Manifest, options: LoadOptions
) -> tuple[list[OnnxTextEncoder], str]:
    """The encoder at the asked precision. ``auto`` chooses fp16 on CUDA, int8 on the CPU,
    and fp32 when the bundle lacks that one (and logs it); an explicit precision the bundle
    lacks is a ``BundleError``."""
    providers = onnx_providers(options.device)
    precision: str = options.encoder_precision
    if precision == "auto":
        precision = "fp16" if "CUDAExecutionProvider" in providers else "int8"
        if Files.ENCODER[precision] not in manifest.files:
            log.warning("bundle has no %s encoder; auto chose fp32", precision)
            precision = "fp32"
    elif Files.ENCODER[precision] not in manifest.files:
        raise BundleError(
            f"encoder precision {precision} was asked for but the bundle has no "
            f"{Files.ENCODER[precision]}: export it (export.fp16 / the int8 parity), or ask auto"
        )
    max_length = json.loads((p / Files.TOKENIZER_CONFIG).read_text())["max_length"]
    encoders = [
        OnnxTextEncoder(
            p / Files.ENCODER[precision],
            p / Files.TOKENIZER,
            max_length,
            providers,
            options.threads,
        )
        for _ in range(max(1, options.encoder_sessions))
    ]
    require_providers(options.device, encoders[0].providers)
    return encoders, precision
