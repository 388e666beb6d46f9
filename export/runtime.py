"""What the service runs a bundle with: the ONNX text encoder and score head, the FAISS
indexes as served (GPU copy behind one lock), and the serving capability flags.

onnxruntime, tokenizers, faiss and numpy only (import-linter checks it). The export step
checks its parity figures with these same classes, so what is measured at export is what
runs in production.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from export.format import BundleError, Files, read_manifest, resolve_bundle
from models.core.errors import WalrusError

log = logging.getLogger(__name__)


class ParityError(WalrusError):
    """An exported model disagrees with PyTorch beyond tolerance."""


PARITY_TOLERANCES = {"fp32_tolerance": 1e-4, "int8_min_cosine": 0.99, "fp16_min_cosine": 0.999}
"""What ``verify_bundle`` holds every bundle to, and the export's defaults."""

DevicePreference = Literal["auto", "cpu", "cuda"]

GPU_MAX_K = 2048
"""FAISS GPU flat and IVF indexes return at most this many results per query."""


@lru_cache(maxsize=1)
def faiss_gpu_count() -> int:
    """GPUs FAISS can use: 0 with the CPU wheel or without a device (warns if broken)."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception as exc:  # a GPU wheel without a driver
        log.warning("FAISS GPU check failed (%s); FAISS runs on the CPU", exc)
        return 0


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: its CPU affinity, capped by a cgroup CPU quota
    (v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``), which is what ``docker run --cpus`` and
    Kubernetes limits set. ``os.cpu_count()`` is the host's and oversubscribes a container."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(1, cpus or 1)


def _cgroup_quota(root: Path) -> float | None:
    """The cgroup CPU quota in CPUs, or None when there is none (or it cannot be read)."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def onnx_providers(preference: DevicePreference = "auto") -> list[str]:
    """onnxruntime execution providers to ask for, best first, CPU always last.

    CUDA is asked for only when the installed onnxruntime offers it; a CUDA provider that
    fails to initialise falls back to the CPU inside onnxruntime. Check
    ``session.get_providers()`` for what was really picked (``ort.get_device()`` says "GPU"
    for the GPU wheel even without a GPU).
    """
    available = ort.get_available_providers()
    providers = []
    if preference != "cpu" and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    elif preference == "cuda":
        log.warning("device=cuda requested but onnxruntime has no CUDA provider; using the CPU")
    providers.append("CPUExecutionProvider")
    return providers


def search(
    index: Any, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores for (b, dim) queries; ``k`` is clamped to the index size and raises
    HNSW's efSearch when needed (FAISS does not). ``exclude``: ids no row may return, dropped
    inside FAISS by an ``IDSelector`` (so the search for k allowed items costs the same however
    many are excluded). Padding ids (-1) stay for callers to drop."""
    queries, k = _clamped(index, queries, k)
    inner: Any = faiss.downcast_index(index)
    hnsw = isinstance(inner, faiss.IndexHNSW)
    selector = banned = None
    if exclude is not None and len(exclude):
        # Both objects stay referenced here for the search: FAISS keeps raw pointers.
        banned = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
        selector = faiss.IDSelectorNot(banned)
    params: Any = None
    if hnsw and (inner.hnsw.efSearch < k or selector is not None):
        params = faiss.SearchParametersHNSW(efSearch=max(k, inner.hnsw.efSearch), sel=selector)  # type: ignore[attr-defined]
    elif selector is not None and isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=inner.nprobe, sel=selector)  # type: ignore[call-arg]
    elif selector is not None:
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    scores, ids = index.search(queries, k, params=params)
    del banned
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
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As ``search``: (b, k') ids and scores. ``exclude`` needs ``filters``."""
        if exclude is not None and len(exclude) and not self.filters:
            raise ValueError("the GPU copy cannot filter: over-fetch and drop instead")
        if self.gpu_index is not None and min(k, self.ntotal) <= GPU_MAX_K:
            queries, k = _clamped(self.cpu_index, queries, k)
            with self._gpu_lock:  # GPU copies are flat or IVF: no efSearch to raise
                scores, ids = self.gpu_index.search(queries, k)
            return ids, scores
        return search(self.cpu_index, queries, k, exclude)


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


def make_session(path: str | Path, providers: list[str], threads: int = 0) -> Any:
    """An onnxruntime session; ``threads`` 0 lets onnxruntime choose."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def load_tokenizer(path: str | Path, max_length: int, pad_id: int, pad_token: str) -> Tokenizer:
    """``tokenizer.json`` truncating to ``max_length`` and padding to the longest text."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


class OnnxTextEncoder:
    """tokenizer.json + encoder ONNX: texts -> (n, dim) float32 unit vectors."""

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        max_length: int,
        providers: list[str] | None = None,
        threads: int = 0,
    ) -> None:
        config_path = Path(tokenizer_path).with_name("tokenizer_config.json")
        pad_id, pad_token = 0, "[PAD]"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            pad_id, pad_token = int(config["pad_id"]), str(config["pad_token"])
        self.tokenizer = load_tokenizer(tokenizer_path, max_length, pad_id, pad_token)
        self.session = make_session(model_path, providers or ["CPUExecutionProvider"], threads)
        self.max_length = max_length

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, length) int64 input ids and attention mask, padded to the longest text."""
        batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        return ids, mask

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids, mask = self.tokenize(texts)
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])


class OnnxHead:
    """head.onnx: (n, n_features) float32 -> (n,) scores."""

    def __init__(
        self, model_path: str | Path, providers: list[str] | None = None, threads: int = 0
    ):
        self.session = make_session(model_path, providers or ["CPUExecutionProvider"], threads)

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        (out,) = self.session.run(
            None, {"features": np.ascontiguousarray(features, dtype=np.float32)}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def check_parity(
    bundle: Path,
    texts: list[str],
    reference: np.ndarray,
    head_features: np.ndarray,
    head_reference: np.ndarray,
    tolerances: dict[str, float],
) -> dict[str, Any]:
    """Run the bundle's ONNX models as the service does and compare with the references."""
    max_length = json.loads((bundle / Files.TOKENIZER_CONFIG).read_text())["max_length"]

    def encode(precision: str) -> np.ndarray | None:
        path = bundle / Files.ENCODER[precision]
        if not path.is_file():
            return None
        return OnnxTextEncoder(path, bundle / Files.TOKENIZER, max_length).encode(texts)

    fp32_out, int8_out, fp16_out = encode("fp32"), encode("int8"), encode("fp16")
    if fp32_out is None:
        raise BundleError(f"{bundle}: no {Files.ENCODER['fp32']}")
    fp32_diff = float(np.abs(fp32_out - reference).max())
    int8_cos = None if int8_out is None else float(cosine_rows(int8_out, reference).min())
    fp16_cos = None if fp16_out is None else float(cosine_rows(fp16_out, reference).min())
    head_diff = float(
        np.abs(OnnxHead(bundle / Files.HEAD).score(head_features) - head_reference).max()
    )
    fp32_tol, int8_min, fp16_min = (
        tolerances["fp32_tolerance"],
        tolerances["int8_min_cosine"],
        tolerances["fp16_min_cosine"],
    )
    figures = {
        "encoder_fp32_max_abs_diff": fp32_diff,
        "encoder_int8_min_cosine": int8_cos,
        "encoder_fp16_min_cosine": fp16_cos,
        "head_max_abs_diff": head_diff,
        "texts": len(texts),
        **tolerances,
    }
    problems = []
    if fp32_diff > fp32_tol:
        problems.append(f"encoder fp32 max abs diff {fp32_diff:.2e} > {fp32_tol:.0e}")
    if int8_cos is not None and int8_cos < int8_min:
        problems.append(f"encoder int8 min cosine {int8_cos:.4f} < {int8_min}")
    if fp16_cos is not None and fp16_cos < fp16_min:
        problems.append(f"encoder fp16 min cosine {fp16_cos:.5f} < {fp16_min}")
    if head_diff > fp32_tol:
        problems.append(f"head max abs diff {head_diff:.2e} > {fp32_tol:.0e}")
    if problems:
        raise ParityError("parity failed: " + "; ".join(problems))
    return figures


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Re-check every checksum and re-run the parity figures; ``BundleError`` or
    ``ParityError`` with one line on failure. Returns the recomputed figures."""
    bundle = resolve_bundle(path)
    manifest = read_manifest(bundle)
    texts = json.loads((bundle / Files.PARITY_TEXTS).read_text())
    reference = np.load(bundle / Files.PARITY_ENCODER)
    features = np.load(bundle / Files.PARITY_HEAD_FEATURES)
    head_reference = np.load(bundle / Files.PARITY_HEAD)
    # The tolerances are walrus' own, never the manifest's: a manifest cannot vouch for itself.
    figures = check_parity(bundle, texts, reference, features, head_reference, PARITY_TOLERANCES)
    return {"bundle_id": manifest.bundle_id, "files": len(manifest.files), "parity": figures}
