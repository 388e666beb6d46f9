"""The loaded bundle and what a request does with it: encode -> ANN -> rerank.

Runs on onnxruntime, tokenizers, faiss and numpy only. The request logic itself is
``models.hybrid`` (numpy), shared with offline evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.faiss_index import search as faiss_search
from export.manifest import read_manifest, resolve_bundle
from models.data.dataset import IdMap
from models.device import faiss_gpu_count, onnx_providers
from models.fold_in import fold_in_user
from models.hybrid import ItemTables, build_request, recommend
from service.runtime import OnnxHead, OnnxTextEncoder
from service.schemas import Item, RecommendRequest, RecommendResponse, SimilarResponse
from service.settings import Settings

log = logging.getLogger("walrus.service.recommender")


class InputError(ValueError):
    """A request value the service cannot use: answered with 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownItem(KeyError):
    """An item id that is not in the bundle (404)."""


class Stopwatch:
    """Milliseconds per named stage of one request."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

        return wrapper


class Recommender:
    """Everything loaded from one bundle. Thread-safe for concurrent requests."""

    def __init__(self, bundle: Path, settings: Settings) -> None:
        import faiss

        self.path = resolve_bundle(bundle)
        self.manifest = read_manifest(self.path)  # format version and every sha256
        if settings.verify_parity:
            from export.bundle import verify_bundle

            verify_bundle(self.path)
        self.settings = settings
        self.bundle_id: str = self.manifest["bundle_id"]
        p = self.path
        self.users = IdMap.load(p / "user_ids.json")
        self.items = IdMap.load(p / "item_ids.json")
        self.titles = [it["title"] for it in json.loads((p / "items.json").read_text())]
        self.user_factors = np.load(p / "user_factors.npy", mmap_mode="r")
        self.wals_item_factors = np.load(p / "wals_item_factors.npy")
        self.gramian = np.load(p / "item_gramian.npy")
        self.col_weights = np.load(p / "col_weights.npy")
        self.seen_indptr = np.load(p / "seen_indptr.npy")
        self.seen_indices = np.load(p / "seen_indices.npy")
        self.tables = ItemTables(
            np.load(p / "item_factors.npy"),
            np.load(p / "item_text_embeddings.npy"),
            np.load(p / "item_log_popularity.npy"),
        )
        self.wals_params = self.manifest["wals"]
        candidates = self.manifest["candidates"]
        self.n_wals = settings.n_wals or candidates["n_wals"]
        self.n_text = settings.n_text or candidates["n_text"]

        if settings.threads > 0:
            faiss.omp_set_num_threads(settings.threads)
        self.faiss_device = "cpu"
        self.indexes = {name: self._load_index(p / f"{name}.faiss") for name in ("wals", "text")}

        providers = onnx_providers(settings.device)
        encoder_file = (
            "encoder.int8.onnx" if settings.encoder_precision == "int8" else "encoder.onnx"
        )
        if not (p / encoder_file).is_file():
            encoder_file = "encoder.onnx"
        tokenizer_cfg = json.loads((p / "tokenizer_config.json").read_text())
        self.encoder = OnnxTextEncoder(
            p / encoder_file,
            p / "tokenizer.json",
            tokenizer_cfg["max_length"],
            providers,
            settings.threads,
        )
        self.encoder_precision = "int8" if "int8" in encoder_file else "fp32"
        self.head = OnnxHead(p / "head.onnx", providers, settings.threads)
        self.onnx_providers = self.head.session.get_providers()
        log.info(
            "bundle %s: %d users, %d items; ONNX on %s; FAISS on %s",
            self.bundle_id,
            len(self.users),
            len(self.items),
            self.onnx_providers,
            self.faiss_device,
        )

    def _load_index(self, path: Path) -> Any:
        import faiss

        index = faiss.read_index(str(path))
        name = path.stem
        params = self.manifest["indexes"][name]["params"]
        if "nprobe" in params:
            faiss.extract_index_ivf(index).nprobe = params["nprobe"]
        if "ef_search" in params:
            faiss.downcast_index(index).hnsw.efSearch = params["ef_search"]  # type: ignore[attr-defined]
        kind = self.manifest["indexes"][name]["kind"]
        if self.settings.device != "cpu" and kind != "hnsw" and faiss_gpu_count() > 0:
            try:
                index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
                self.faiss_device = "gpu"
            except Exception as exc:  # keep serving on the CPU
                log.warning("FAISS GPU unavailable (%s); searching on the CPU", exc)
        return index

    # ------------------------------------------------------------------ helpers
    def _search_fn(self, name: str) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        index = self.indexes[name]

        def search(vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            ids, scores = faiss_search(index, vector[None, :], k)
            return ids[0], scores[0]

        return search

    def _lookup(self, ids: list[str] | None, what: str, warnings: list[str]) -> np.ndarray:
        found, unknown = self.items.lookup(ids or [])
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            warnings.append(f"{what}: {len(unknown)} unknown item id(s) ignored: {shown}")
        return found

    def seen(self, user: int) -> np.ndarray:
        return np.asarray(
            self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]], dtype=np.int64
        )

    def fold_in(self, items: np.ndarray) -> np.ndarray:
        return fold_in_user(
            self.wals_item_factors, self.gramian, self.col_weights, self.wals_params, items
        )

    def check(self, req: RecommendRequest) -> None:
        s = self.settings
        if req.k > s.max_k:
            raise InputError("k", f"k must be <= {s.max_k}")
        if req.query is not None:
            if len(req.query) > s.max_query_chars:
                raise InputError("query", f"query must be at most {s.max_query_chars} characters")
            if not req.query.strip():
                raise InputError("query", "query must not be blank; leave it out instead")
        if req.history is not None and len(req.history) > s.max_history:
            raise InputError("history", f"history holds at most {s.max_history} item ids")
        if req.exclude is not None and len(req.exclude) > s.max_exclude:
            raise InputError("exclude", f"exclude holds at most {s.max_exclude} item ids")

    def _items(self, ids: np.ndarray, scores: np.ndarray, sources: list[list[str]]) -> list[Item]:
        return [
            Item(item_id=self.items.ids[i], title=self.titles[i], score=float(s), sources=src)
            for i, s, src in zip(ids.tolist(), scores.tolist(), sources, strict=True)
        ]

    # ------------------------------------------------------------------ endpoints
    def recommend(self, req: RecommendRequest) -> RecommendResponse:
        """The whole request; blocking (ONNX and FAISS): call it off the event loop."""
        self.check(req)
        clock = Stopwatch()
        start = time.perf_counter()
        warnings: list[str] = []
        user_id = req.user_id
        user = self.users.index(user_id) if user_id is not None and user_id in self.users else None
        if req.user_id is not None and user is None:
            warnings.append(f"user_id {req.user_id!r} is unknown: served without a user vector")
        history = self._lookup(req.history, "history", warnings)
        exclude = self._lookup(req.exclude, "exclude", warnings)
        query_vector = None
        if req.query is not None:
            query_vector = clock.timed("encode", self.encoder.encode)([req.query])[0]
        request = build_request(
            req.k,
            user_vector=np.asarray(self.user_factors[user]) if user is not None else None,
            seen=self.seen(user) if user is not None else np.zeros(0, np.int64),
            history=history,
            exclude=exclude,
            exclude_seen=req.exclude_seen,
            query_vector=query_vector,
            item_text_embeddings=self.tables.item_text_embeddings,
            fold_in=clock.timed("fold_in", self.fold_in),
        )
        rec = recommend(
            self.tables,
            request,
            clock.timed("ann", self._search_fn("wals")),
            clock.timed("ann", self._search_fn("text")),
            clock.timed("rerank", self.head.score),
            self.n_wals,
            self.n_text,
        )
        clock.ms["total"] = (time.perf_counter() - start) * 1e3
        return RecommendResponse(
            items=self._items(rec.items, rec.scores, rec.sources),
            user_known=user is not None,
            bundle_id=self.bundle_id,
            timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
            warnings=warnings,
        )

    def similar(self, item_id: str, k: int) -> SimilarResponse:
        """Item-to-item: WALS factors, or the text index for cold items."""
        if item_id not in self.items:
            raise UnknownItem(item_id)
        if k > self.settings.max_k:
            raise InputError("k", f"k must be <= {self.settings.max_k}")
        clock = Stopwatch()
        start = time.perf_counter()
        item = self.items.index(item_id)
        cold = self.tables.item_log_popularity[item] == 0 or not np.any(
            self.tables.item_factors[item]
        )
        source = "text" if cold else "wals"
        vector = (self.tables.item_text_embeddings if cold else self.tables.item_factors)[item]
        ids, scores = clock.timed("ann", self._search_fn(source))(vector, k + 1)
        keep = (ids >= 0) & (ids != item)
        ids, scores = ids[keep][:k], scores[keep][:k]
        clock.ms["total"] = (time.perf_counter() - start) * 1e3
        return SimilarResponse(
            item_id=item_id,
            source=source,
            items=self._items(ids, scores, [[source]] * len(ids)),
            bundle_id=self.bundle_id,
            timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
        )

    def example_user(self) -> str | None:
        return self.users.ids[0] if len(self.users) else None
