"""FAISS inner-product indexes over item vectors: choice by size, build, recall check.

Exact (``IndexFlatIP``) under ``exact_threshold`` items, else HNSW or IVF. Built on a GPU
when a FAISS GPU build sees one (flat and IVF), always saved as a CPU index. The service
loads the saved file and, on a GPU machine, may move it to the GPU itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

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
    build_params: str = ""  # what shaped the build besides the factory ("efConstruction=200")


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
    n = len(vectors)
    kind = choose_kind(n, cfg)
    factory, search_params = factory_string(kind, n, cfg)
    return build_from_factory(vectors, kind, factory, search_params, build_params(kind, cfg))


def build_params(kind: str, cfg: IndexConfig) -> str:
    """The build-time parameters a kind takes beyond its factory string, as the manifest
    records them (``IndexEntry.build_params``) for a compaction to build the same index."""
    return f"efConstruction={cfg.hnsw_ef_construction}" if kind == "hnsw" else ""


def build_from_factory(
    vectors: np.ndarray, kind: str, factory: str, search_params: str, params: str
) -> BuiltIndex:
    """An index of the given factory string over (n, dim) vectors, built with ``params``:
    what ``build_index`` chose, or what a bundle's manifest records (a compaction rebuilds
    it so)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    for name, value in (p.split("=", 1) for p in params.split(",") if p):
        if name != "efConstruction" or kind != "hnsw":
            raise ValueError(f"unknown build parameter {name!r} for a {kind} index")
        faiss.downcast_index(index).hnsw.efConstruction = int(value)  # type: ignore[attr-defined]
    if search_params:
        faiss.ParameterSpace().set_index_parameters(index, search_params)  # type: ignore[arg-type]

    training = vectors
    if kind == "ivf":
        # k-means on a sample: FAISS would take up to 256 points per list (all 500k vectors
        # of the seed's catalog, ~8 minutes on 2 cores for 384-d text); 64 per list is
        # within its advice (39-256) and places the centroids as well.
        nlist = int(faiss.downcast_index(index).nlist)  # type: ignore[attr-defined]
        if n > 64 * nlist:
            rng = np.random.default_rng(0)
            training = vectors[np.sort(rng.choice(n, size=64 * nlist, replace=False))]
    built_on = "cpu"
    if kind != "hnsw" and faiss_gpu_count() > 0:
        try:
            res = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
            gpu_index.train(training)
            gpu_index.add(vectors)
            index = faiss.index_gpu_to_cpu(gpu_index)
            built_on = "gpu"
        except Exception as exc:  # fall back rather than lose a long export
            log.warning("FAISS GPU build failed (%s); building on the CPU", exc)
    if built_on == "cpu":
        index.train(training)
        index.add(vectors)
    log.info("FAISS %s index over %d x %d built on the %s", factory, n, dim, built_on)
    return BuiltIndex(index, kind, factory, search_params, built_on, params)


def ann_recall(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int = 100) -> float:
    """recall@k against exact search (``faiss.knn``), counted as ann-benchmarks does: a
    returned item is right when its score reaches the exact k-th score, so items tied with
    the k-th are not counted wrong for losing a tie (catalogs repeat titles). Zero-norm
    queries are skipped."""
    queries = np.ascontiguousarray(queries[np.linalg.norm(queries, axis=1) > 0], np.float32)
    if len(queries) == 0:
        return 1.0
    k = min(k, vectors.shape[0])
    ids, scores = search(index, queries, k)
    truth, _ = faiss.knn(
        queries, np.ascontiguousarray(vectors, np.float32), k, metric=faiss.METRIC_INNER_PRODUCT
    )
    kth = truth[:, -1:]
    right = (ids >= 0) & (scores >= kth - 1e-5 * np.maximum(np.abs(kth), 1.0))
    return float(right.sum() / (len(queries) * k))


TUNABLE = {"hnsw": "efSearch", "ivf": "nprobe"}


def tune_search(
    built: BuiltIndex, vectors: np.ndarray, queries: np.ndarray, target: float, k: int = 100
) -> float:
    """The smallest search parameter (HNSW efSearch, IVF nprobe) whose recall@k on ``queries``
    reaches ``target``, set through ``faiss.ParameterSpace``: doubled until it does (or can grow
    no more), then bisected back down, since every step above it costs search time.
    ``built.search_params`` records it. Returns the recall at that setting."""
    name = TUNABLE.get(built.kind)
    recall = ann_recall(built.index, vectors, queries, k)
    if name is None or recall >= target:
        return recall
    inner: Any = faiss.downcast_index(built.index)
    low = int(inner.hnsw.efSearch if built.kind == "hnsw" else inner.nprobe)
    ceiling = 4096 if built.kind == "hnsw" else int(inner.nlist)
    space = faiss.ParameterSpace()
    measured: dict[int, float] = {low: recall}

    def apply(value: int) -> None:
        built.search_params = f"{name}={value}"
        space.set_index_parameters(built.index, built.search_params)  # type: ignore[arg-type]

    def measure(value: int) -> float:
        apply(value)
        measured[value] = ann_recall(built.index, vectors, queries, k)
        log.info("%s %s: recall@%d %.4f", built.factory, built.search_params, k, measured[value])
        return measured[value]

    high = low
    while measure(high := min(2 * high, ceiling)) < target and high < ceiling:
        low = high
    if measured[high] >= target:
        while high - low > max(1, low // 8):  # within 1/8: finer steps buy little
            middle = (low + high) // 2
            if measure(middle) >= target:
                high = middle
            else:
                low = middle
    apply(high)  # bisection may have left a smaller, failing value set
    return measured[high]


def speedup_over_flat(
    built: BuiltIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 100
) -> float:
    """How many times faster than exact search one query at a time (how the service asks
    for a request that filters its exclusions) the index answers, on ``queries``."""
    if built.kind == "flat":
        return 1.0
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, np.float32))
    queries = np.ascontiguousarray(queries, np.float32)

    def seconds(index: Any) -> float:
        search(index, queries[:1], k)  # lazy initialisation out of the timing
        start = time.perf_counter()
        for row in range(len(queries)):
            search(index, queries[row : row + 1], k)
        return time.perf_counter() - start

    return seconds(flat) / max(seconds(built.index), 1e-9)
