"""The FAISS indexes as the service searches them: a GPU copy behind one lock, exclusions
dropped inside the search, and the ``Searcher`` the core's batched pool plan runs on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from export.runtime.hardware import faiss_gpu_count
from models.core.types import SearchBatch

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
"""FAISS GPU flat and IVF indexes return at most this many results per query."""

HNSW_MAX_EF = 4096
"""The widest efSearch a filtered HNSW search is given; what it still misses, the core
ranks exactly (``models.core.candidates``)."""


def search(
    index: Any,
    queries: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores for (b, dim) queries; ``k`` is clamped to the index size and raises
    HNSW's efSearch when needed (FAISS does not). ``exclude``: ids no row may return, dropped
    inside FAISS by an ``IDSelector`` (so the search for k allowed items costs the same however
    many are excluded); ``allowed``: an (ntotal,) bool mask of the only ids any row may return
    (an ``IDSelectorBitmap``), which replaces ``exclude``: an IVF index then probes, and an
    HNSW index explores, about 1 / (the share that passes) times as much, so a filter
    passing 5% finds about as many items as an unfiltered search. Padding ids (-1) stay for
    callers to drop."""
    queries, k = _clamped(index, queries, k)
    inner: Any = faiss.downcast_index(index)
    hnsw = isinstance(inner, faiss.IndexHNSW)
    selector: Any = None
    banned = bits = None
    widen = 1.0  # a filter passing a share s of the items: visit about 1/s as much
    # The objects stay referenced here for the search: FAISS keeps raw pointers.
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        widen = len(allowed) / max(int(np.count_nonzero(allowed)), 1)
    elif exclude is not None and len(exclude):
        banned = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
        selector = faiss.IDSelectorNot(banned)
    params: Any = None
    if hnsw and (inner.hnsw.efSearch < k or selector is not None):
        ef = min(int(max(k, inner.hnsw.efSearch) * widen), HNSW_MAX_EF)
        params = faiss.SearchParametersHNSW(efSearch=max(k, ef), sel=selector)  # type: ignore[attr-defined]
    elif selector is not None and isinstance(inner, faiss.IndexIVF):
        nprobe = min(int(np.ceil(inner.nprobe * widen)), int(inner.nlist))
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)  # type: ignore[call-arg]
    elif selector is not None:
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    scores, ids = index.search(queries, k, params=params)
    del banned, bits
    return ids, scores


def _clamped(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """(b, d) contiguous float32 queries and k within 1..ntotal, as FAISS wants them."""
    k = max(1, min(k, index.ntotal))
    return np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d), k


class ServedIndex:
    """An index as the service searches it: the CPU index, and its GPU copy when one is used.

    FAISS GPU indexes are not thread-safe, even for search, so every GPU search goes through
    one lock; a search for more than ``GPU_MAX_K`` results runs on the CPU copy instead.
    """

    def __init__(
        self, cpu_index: Any, kind: str, gpu_index: Any = None, gpu_resources: Any = None
    ) -> None:
        self.cpu_index = cpu_index
        self.kind = kind
        self.gpu_index = gpu_index
        self.gpu_resources = gpu_resources  # must outlive the GPU index
        self._gpu_lock = threading.Lock()

    @property
    def device(self) -> str:
        return "gpu" if self.gpu_index is not None else "cpu"

    @property
    def ntotal(self) -> int:
        return int(self.cpu_index.ntotal)

    @property
    def filters(self) -> bool:
        """Whether ``search`` drops excluded ids inside FAISS (the GPU copy cannot)."""
        return self.gpu_index is None

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As ``search``: (b, k') ids and scores. ``exclude`` and ``allowed`` need
        ``filters``."""
        filtering = allowed is not None or (exclude is not None and len(exclude))
        if filtering and not self.filters:
            raise ValueError("the GPU copy cannot filter: over-fetch and drop instead")
        if self.gpu_index is not None and min(k, self.ntotal) <= GPU_MAX_K:
            queries, k = _clamped(self.cpu_index, queries, k)
            with self._gpu_lock:  # GPU copies are flat or IVF: no efSearch to raise
                scores, ids = self.gpu_index.search(queries, k)
            return ids, scores
        return search(self.cpu_index, queries, k, exclude, allowed)


def load_index(path: Path, kind: str, search_params: str, use_gpu: bool = False) -> ServedIndex:
    """Read a saved index, apply the manifest's ParameterSpace search string (the manifest is
    the record an operator reads and may change; the file carries the values it was saved
    with), and copy flat and IVF indexes to GPU 0 when ``use_gpu`` and FAISS sees one. A
    failed GPU copy logs a warning and serves from the CPU. Flat and HNSW indexes keep their
    vectors memory-mapped (several workers share the pages; searches are as fast). IVF
    indexes are read into memory: FAISS's memory-mapped inverted lists searched 4-6x slower
    (seed-scale bundle, one thread: 3.5 vs 0.9 ms per 384-d query)."""
    index = faiss.read_index(str(path), 0 if kind == "ivf" else faiss.IO_FLAG_MMAP_IFC)
    if search_params:
        faiss.ParameterSpace().set_index_parameters(index, search_params)  # type: ignore[arg-type]
    if use_gpu and kind != "hnsw" and faiss_gpu_count() > 0:
        try:
            resources = faiss.StandardGpuResources()
            return ServedIndex(index, kind, faiss.index_cpu_to_gpu(resources, 0, index), resources)
        except Exception as exc:  # keep serving on the CPU
            log.warning("FAISS GPU unavailable for %s (%s); searching on the CPU", path.name, exc)
    return ServedIndex(index, kind)


class ServedIndexes:
    """The bundle's indexes by name, as the core's ``Searcher``: each ``SearchBatch`` runs as
    few FAISS calls as the index allows. Over-fetched rows go in one call (HNSW: one per k,
    since its results for a smaller k are not a prefix of a larger k's), rows sharing a
    filter in one call with its ``IDSelectorBitmap``; rows that drop their exclusions inside
    the search go one by one, each with its own ``IDSelector``."""

    def __init__(self, indexes: Mapping[str, ServedIndex]) -> None:
        self.indexes = dict(indexes)
        self.filtering = frozenset(n for n, index in self.indexes.items() if index.filters)

    def __getitem__(self, name: str) -> ServedIndex:
        return self.indexes[name]

    def search(self, name: str, batch: SearchBatch) -> np.ndarray:
        index = self.indexes[name]
        k_max = int(batch.k.max(initial=1))
        out = np.full((len(batch.k), k_max), -1, dtype=np.int64)
        groups: dict[tuple[int, int], list[int]] = {}
        masks: dict[int, np.ndarray] = {}
        for row, (k, exclude) in enumerate(zip(batch.k.tolist(), batch.exclude, strict=True)):
            mask = batch.allowed_for(row)
            if exclude is not None:
                ids, _ = index.search(batch.vectors[row : row + 1], k, exclude)
                out[row, : ids.shape[1]] = ids[0]
                continue
            if mask is not None:
                masks[id(mask)] = mask  # rows sharing a filter share a call and a selector
            key = (id(mask) if mask is not None else 0, k if index.kind == "hnsw" else 0)
            groups.setdefault(key, []).append(row)
        for (mask_id, _), rows in groups.items():
            ids, _ = index.search(
                batch.vectors[rows], int(batch.k[rows].max()), allowed=masks.get(mask_id)
            )
            out[rows, : ids.shape[1]] = ids
        return out
