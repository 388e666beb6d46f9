"""FAISS inner-product indexes over item vectors: choice by size, build, recall check.

Exact (``IndexFlatIP``) under ``exact_threshold`` items, else HNSW or IVF. Built on a GPU
when a FAISS GPU build sees one (flat and IVF), always saved as a CPU index. The service
loads the saved file and, on a GPU machine, may move it to the GPU itself.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.device import faiss_gpu_count

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
"""FAISS GPU flat and IVF indexes return at most this many results per query."""


class IndexConfig(BaseModel):
    """How item vectors are indexed (the ``[export]`` section carries these fields)."""

    model_config = ConfigDict(extra="ignore")

    index_type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_threshold: int = Field(50_000, ge=0, description="auto: exact search below this.")
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(200, ge=8)
    hnsw_ef_search: int = Field(128, ge=1, description="Raised to k at query time if smaller.")
    ivf_nlist: int = Field(0, ge=0, description="0: 4 * sqrt(n), at most n / 39.")
    ivf_nprobe: int = Field(16, ge=1)
    auto_large: Literal["hnsw", "ivf"] = "hnsw"


@dataclass
class BuiltIndex:
    index: Any  # a CPU faiss.Index
    kind: str  # flat, hnsw or ivf
    built_on: str  # cpu or gpu
    params: dict[str, int]


def choose_kind(n: int, cfg: IndexConfig) -> str:
    if cfg.index_type != "auto":
        return cfg.index_type
    return "flat" if n < cfg.exact_threshold else cfg.auto_large


def build_index(vectors: np.ndarray, cfg: IndexConfig) -> BuiltIndex:
    """Index (n, dim) float32 vectors for maximum inner product search."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_kind(n, cfg)
    params: dict[str, int] = {}
    index: Any  # faiss' stubs type each index class apart
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
        params = {"m": cfg.hnsw_m, "ef_search": cfg.hnsw_ef_search}
    elif kind == "ivf":
        nlist = cfg.ivf_nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    else:
        raise ValueError(f"unknown index type {kind!r}")

    built_on = "cpu"
    if kind != "hnsw" and faiss_gpu_count() > 0:
        try:
            res = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
            if kind == "ivf":
                gpu_index.train(vectors)
            gpu_index.add(vectors)
            index = faiss.index_gpu_to_cpu(gpu_index)
            built_on = "gpu"
        except Exception as exc:  # fall back rather than lose a long export
            log.warning("FAISS GPU build failed (%s); building on the CPU", exc)
    if built_on == "cpu":
        if kind == "ivf":
            index.train(vectors)
        index.add(vectors)
    log.info("FAISS %s index over %d x %d built on the %s", kind, n, dim, built_on)
    return BuiltIndex(index, kind, built_on, params)


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores for (b, dim) queries; ``k`` is clamped to the index size and raises
    HNSW's efSearch when needed (FAISS does not). Padding ids (-1) stay for callers to drop."""
    import faiss

    k = max(1, min(k, index.ntotal))
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    hnsw = faiss.downcast_index(index)
    if isinstance(hnsw, faiss.IndexHNSW) and hnsw.hnsw.efSearch < k:
        params = faiss.SearchParametersHNSW(efSearch=k)  # type: ignore[attr-defined]
        scores, ids = index.search(queries, k, params=params)
    else:
        scores, ids = index.search(queries, k)
    return ids, scores


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(b, k) ids of the exact top-k inner products: the oracle."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return top


def ann_recall(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int = 100) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over ``queries`` (zero-norm queries skipped)."""
    queries = queries[np.linalg.norm(queries, axis=1) > 0]
    if len(queries) == 0:
        return 1.0
    k = min(k, vectors.shape[0])
    ids, _ = search(index, queries, k)
    truth = exact_top_k(vectors, queries, k)
    hits = [len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(ids, truth, strict=True)]
    return float(np.mean(hits) / k)


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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As ``search``: (b, k') ids and scores."""
        if self.gpu_index is not None and min(k, self.ntotal) <= GPU_MAX_K:
            k = max(1, min(k, self.ntotal))
            queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.cpu_index.d)
            with self._gpu_lock:  # GPU copies are flat or IVF: no efSearch to raise
                scores, ids = self.gpu_index.search(queries, k)
            return ids, scores
        return search(self.cpu_index, queries, k)


def load_index(path: Path, kind: str, params: dict[str, int], use_gpu: bool = False) -> ServedIndex:
    """Read a saved index, restore its search parameters (FAISS does not save nprobe or
    efSearch), and copy flat and IVF indexes to GPU 0 when ``use_gpu`` and FAISS sees one.
    A failed GPU copy logs a warning and serves from the CPU."""
    import faiss

    index = faiss.read_index(str(path))
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    if "ef_search" in params:
        faiss.downcast_index(index).hnsw.efSearch = params["ef_search"]  # type: ignore[attr-defined]
    if use_gpu and kind != "hnsw" and faiss_gpu_count() > 0:
        try:
            resources = faiss.StandardGpuResources()
            return ServedIndex(index, kind, faiss.index_cpu_to_gpu(resources, 0, index), resources)
        except Exception as exc:  # keep serving on the CPU
            log.warning("FAISS GPU unavailable for %s (%s); searching on the CPU", path.name, exc)
    return ServedIndex(index, kind)
