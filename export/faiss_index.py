"""FAISS inner-product indexes over item vectors: choice by size, build, recall check.

Exact (``IndexFlatIP``) under ``exact_threshold`` items, else HNSW or IVF. Built on a GPU
when a FAISS GPU build sees one (flat and IVF), always saved as a CPU index. The service
loads the saved file and, on a GPU machine, may move it to the GPU itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from export.runtime import faiss_gpu_count, search
from models.config import IndexConfig

log = logging.getLogger(__name__)


@dataclass
class BuiltIndex:
    index: Any  # a CPU faiss.Index
    kind: str  # flat, hnsw or ivf
    factory: str  # the faiss.index_factory string it was built from
    search_params: str  # ParameterSpace string the service applies at load ("" for flat)
    built_on: str  # cpu or gpu


def choose_kind(n: int, cfg: IndexConfig) -> str:
    if cfg.index_type != "auto":
        return cfg.index_type
    return "flat" if n < cfg.exact_threshold else cfg.auto_large


def factory_string(kind: str, n: int, cfg: IndexConfig) -> tuple[str, str]:
    """``(index_factory string, ParameterSpace search string)`` for ``n`` vectors."""
    if kind == "flat":
        return "Flat", ""
    if kind == "hnsw":
        return f"HNSW{cfg.hnsw_m},Flat", f"efSearch={cfg.hnsw_ef_search}"
    if kind == "ivf":
        nlist = cfg.ivf_nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        return f"IVF{nlist},Flat", f"nprobe={min(cfg.ivf_nprobe, nlist)}"
    raise ValueError(f"unknown index type {kind!r}")


def build_index(vectors: np.ndarray, cfg: IndexConfig) -> BuiltIndex:
    """Index (n, dim) float32 vectors for maximum inner product search."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_kind(n, cfg)
    factory, search_params = factory_string(kind, n, cfg)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = cfg.hnsw_ef_construction  # type: ignore[attr-defined]
    if search_params:
        faiss.ParameterSpace().set_index_parameters(index, search_params)  # type: ignore[arg-type]

    built_on = "cpu"
    if kind != "hnsw" and faiss_gpu_count() > 0:
        try:
            res = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
            gpu_index.train(vectors)
            gpu_index.add(vectors)
            index = faiss.index_gpu_to_cpu(gpu_index)
            built_on = "gpu"
        except Exception as exc:  # fall back rather than lose a long export
            log.warning("FAISS GPU build failed (%s); building on the CPU", exc)
    if built_on == "cpu":
        index.train(vectors)
        index.add(vectors)
    log.info("FAISS %s index over %d x %d built on the %s", factory, n, dim, built_on)
    return BuiltIndex(index, kind, factory, search_params, built_on)


def ann_recall(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int = 100) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over ``queries`` (zero-norm queries skipped); the
    exact top-k is ``faiss.knn``."""
    queries = np.ascontiguousarray(queries[np.linalg.norm(queries, axis=1) > 0], np.float32)
    if len(queries) == 0:
        return 1.0
    k = min(k, vectors.shape[0])
    ids, _ = search(index, queries, k)
    _, truth = faiss.knn(queries, np.ascontiguousarray(vectors, np.float32), k,
                         metric=faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    return float(knn_intersection_measure(ids, truth))
