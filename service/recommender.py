"""The loaded bundle and what a request does with it: encode -> ANN -> rerank.

Runs on onnxruntime, tokenizers, faiss and numpy only. The request logic itself is
``models.core.hybrid`` (numpy), shared with offline evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np

from export.format import BundleError, Files, read_manifest, resolve_bundle
from export.runtime import (
    OnnxHead,
    OnnxTextEncoder,
    ServedIndex,
    load_index,
    onnx_providers,
    usable_cpus,
    verify_bundle,
)
from models.core.candidates import FirstSearch, first_searches
from models.core.fold_in import fold_in_user
from models.core.hybrid import ItemTables, Request, build_request, recommend
from models.core.ids import IdMap
from models.core.sparse import csr_row
from service.cache import QueryCache
from service.schemas import Item, RecommendRequest, RecommendResponse, SimilarResponse
from service.settings import Settings, process_plan

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

    def __init__(
        self, bundle: Path, settings: Settings, query_cache: QueryCache | None = None
    ) -> None:
        self.path = p = resolve_bundle(bundle)
        self.manifest = read_manifest(p)  # format version, file list and every sha256
        if settings.verify_parity:
            verify_bundle(p)
        self.settings = settings
        self.bundle_id = self.manifest.bundle_id
        self.users = IdMap.load(p / Files.USER_IDS)
        self.items = IdMap.load(p / Files.ITEM_IDS)
        self.titles = [it["title"] for it in json.loads((p / Files.ITEMS).read_text())]
        # The large arrays are memory-mapped: pages load when a request touches them, and
        # several workers on one machine share them.
        self.user_factors = np.load(p / Files.USER_FACTORS, mmap_mode="r")
        self.wals_item_factors = np.load(p / Files.WALS_ITEM_FACTORS, mmap_mode="r")
        self.gramian = np.load(p / Files.ITEM_GRAMIAN)
        self.col_weights = np.load(p / Files.COL_WEIGHTS)
        self.cold_items = np.load(p / Files.COLD_ITEMS)
        self.seen_lists = SimpleNamespace(
            indptr=np.load(p / Files.SEEN_INDPTR, mmap_mode="r"),
            indices=np.load(p / Files.SEEN_INDICES, mmap_mode="r"),
        )
        self.tables = ItemTables(
            np.load(p / Files.ITEM_FACTORS, mmap_mode="r"),
            np.load(p / Files.ITEM_TEXT_EMBEDDINGS, mmap_mode="r"),
            np.load(p / Files.ITEM_LOG_POPULARITY),
            self.cold_items,
        )
        self.wals_params = self.manifest.wals
        self.n_wals = settings.n_wals or self.manifest.candidates.n_wals
        self.n_text = settings.n_text or self.manifest.candidates.n_text
        self.cold_every = (
            settings.cold_every
            if settings.cold_every is not None
            else self.manifest.candidates.cold_every
        )

        threads = process_plan(settings, usable_cpus()).threads
        faiss.omp_set_num_threads(threads)
        self.indexes: dict[str, ServedIndex] = {
            name: load_index(
                p / Files.index(name),
                entry.kind,
                entry.search_params,
                use_gpu=settings.device != "cpu",
            )
            for name, entry in self.manifest.indexes.items()
        }
        # Indexes that drop excluded ids inside the search (the GPU copies over-fetch).
        self.filtering = frozenset(n for n, index in self.indexes.items() if index.filters)
        on_gpu = any(index.device == "gpu" for index in self.indexes.values())
        self.faiss_device = "gpu" if on_gpu else "cpu"

        providers = onnx_providers(settings.device)
        precision = settings.encoder_precision
        if precision == "auto":
            precision = "fp16" if "CUDAExecutionProvider" in providers else "int8"
        if Files.ENCODER[precision] not in self.manifest.files:
            log.warning("bundle has no %s encoder; serving fp32", precision)
            precision = "fp32"
        tokenizer_cfg = json.loads((p / Files.TOKENIZER_CONFIG).read_text())
        self.encoder = OnnxTextEncoder(
            p / Files.ENCODER[precision],
            p / Files.TOKENIZER,
            tokenizer_cfg["max_length"],
            providers,
            threads,
        )
        self.encoder_precision = precision
        # The head is a 2-layer MLP over a few hundred rows: a GPU round trip costs more than
        # it saves, so it always runs on the CPU.
        self.head = OnnxHead(p / Files.HEAD, ["CPUExecutionProvider"], threads)
        self.query_cache = query_cache if query_cache is not None else QueryCache(0)
        self.onnx_providers = self.encoder.providers
        self.check_sizes()
        log.info(
            "bundle %s: %d users, %d items; ONNX on %s; FAISS on %s; %d threads",
            self.bundle_id, len(self.users), len(self.items), self.onnx_providers,
            self.faiss_device, threads,
        )  # fmt: skip

    def check_sizes(self) -> None:
        """Files that are each intact can still disagree with each other (a bundle assembled
        by hand, a partial copy): every array, index and model is cross-checked against the
        id maps and the manifest's dimensions. ``BundleError`` names the first mismatch."""
        n_users, n_items, dims = len(self.users), len(self.items), self.manifest.dims
        head_width = self.head.session.get_inputs()[0].shape[-1]
        checks = [
            ("titles in items.json", len(self.titles), n_items),
            ("user factor rows", self.user_factors.shape[0], n_users),
            ("seen list offsets", len(self.seen_lists.indptr), n_users + 1),
            ("seen lists' end offset", int(self.seen_lists.indptr[-1]),
             len(self.seen_lists.indices)),
            ("item factor rows", self.tables.n_items, n_items),
            ("item text embedding rows", self.tables.item_text_embeddings.shape[0], n_items),
            ("WALS item factor rows", self.wals_item_factors.shape[0], n_items),
            ("cold item flags", len(self.cold_items), n_items),
            ("item factor width", self.tables.item_factors.shape[1], dims.wals),
            ("user factor width", self.user_factors.shape[1], dims.wals),
            ("text embedding width", self.tables.item_text_embeddings.shape[1], dims.text),
            ("encoder output width", self.encoder.dim, dims.text),
            ("head input width", head_width, dims.features),
            *((f"{name} index size", ix.ntotal, n_items) for name, ix in self.indexes.items()),
        ]  # fmt: skip
        for what, got, expected in checks:
            if isinstance(got, int) and got != expected:  # ONNX may name a dim, not size it
                raise BundleError(f"{self.path}: {what} is {got}, expected {expected}")

    # ------------------------------------------------------------------ helpers
    def _search_fn(
        self, name: str, prefetched: tuple[np.ndarray, np.ndarray] | None = None
    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        """One vector's search. The first call is answered from ``prefetched`` (the request's
        row of the batched first search, made for exactly that call); later calls (over-fetch
        rounds) search the index."""
        index = self.indexes[name]
        first = [prefetched]

        def search(vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            found, first[0] = first[0], None
            if found is not None:
                return found[0][:k], found[1][:k]
            ids, scores = index.search(vector[None, :], k)
            return ids[0], scores[0]

        return search

    def _lookup(self, ids: list[str] | None, what: str, warnings: list[str]) -> np.ndarray:
        found, unknown = self.items.lookup(ids or [])
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            warnings.append(f"{what}: {len(unknown)} unknown item id(s) ignored: {shown}")
        return found

    def seen(self, user: int) -> np.ndarray:
        return csr_row(self.seen_lists, user).astype(np.int64)

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
        """One request; blocking (ONNX and FAISS): call it off the event loop."""
        (result,) = self.recommend_batch([req])
        if isinstance(result, Exception):
            raise result
        return result

    def recommend_batch(self, reqs: list[RecommendRequest]) -> list[RecommendResponse | Exception]:
        """Serve requests together, the dynamic batcher's unit of work: one encoder call for
        their distinct queries and one FAISS search per index for their first searches, then
        each request's own exclusions and rerank. Each answer equals what the request gets
        alone; a request that fails gets its exception, the others their answers."""
        start = time.perf_counter()
        results: list[RecommendResponse | Exception | None] = [None] * len(reqs)
        live = []
        for i, req in enumerate(reqs):
            try:
                self.check(req)
                live.append(i)
            except InputError as exc:
                results[i] = exc
        encoded, encode_ms = self._encode({q for i in live if (q := reqs[i].query) is not None})

        prepared = []
        for i in live:
            try:
                prepared.append((i, *self._prepare(reqs[i], encoded, encode_ms)))
            except Exception as exc:  # one request's bug must not fail the batch
                results[i] = exc
        prefetched, ann_ms = self._search_first(
            [first_searches(r, self.tables.n_items, self.n_wals, self.n_text, self.filtering)
             for _, r, _, _, _ in prepared]
        )  # fmt: skip
        for (i, request, clock, warnings, user_known), found in zip(
            prepared, prefetched, strict=True
        ):
            try:
                clock.ms["ann"] = ann_ms
                rec = recommend(
                    self.tables,
                    request,
                    clock.timed("ann", self._search_fn("wals", found.get("wals"))),
                    clock.timed("ann", self._search_fn("text", found.get("text"))),
                    clock.timed("rerank", self.head.score),
                    self.n_wals,
                    self.n_text,
                    self.cold_every,
                )
                clock.ms["total"] = (time.perf_counter() - start) * 1e3
                results[i] = RecommendResponse(
                    items=self._items(rec.items, rec.scores, rec.sources),
                    user_known=user_known,
                    bundle_id=self.bundle_id,
                    timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
                    warnings=warnings,
                )
            except Exception as exc:
                results[i] = exc
        return [r if r is not None else RuntimeError("request not served") for r in results]

    def _encode(self, queries: set[str]) -> tuple[dict[str, np.ndarray], float]:
        """Vectors of the distinct queries: from the cache, the rest in one encoder call."""
        encoded: dict[str, np.ndarray] = {}
        missing = []
        for query in sorted(queries):
            vector = self.query_cache.get(self.bundle_id, query)
            if vector is None:
                missing.append(query)
            else:
                encoded[query] = vector
        if not missing:
            return encoded, 0.0
        start = time.perf_counter()
        for query, vector in zip(missing, self.encoder.encode(missing), strict=True):
            encoded[query] = vector
            self.query_cache.put(self.bundle_id, query, vector)
        return encoded, (time.perf_counter() - start) * 1e3

    def _prepare(
        self, req: RecommendRequest, encoded: dict[str, np.ndarray], encode_ms: float
    ) -> tuple[Request, Stopwatch, list[str], bool]:
        """Resolve ids and vectors: the request as ``models.core.hybrid`` takes it."""
        clock = Stopwatch()
        warnings: list[str] = []
        user_id = req.user_id
        user = self.users.index(user_id) if user_id is not None and user_id in self.users else None
        if req.user_id is not None and user is None:
            warnings.append(f"user_id {req.user_id!r} is unknown: served without a user vector")
        history = self._lookup(req.history, "history", warnings)
        exclude = self._lookup(req.exclude, "exclude", warnings)
        query_vector = None
        if req.query is not None:
            query_vector = encoded[req.query]
            clock.ms["encode"] = encode_ms
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
        return request, clock, warnings, user is not None

    def _search_first(
        self, searches: list[dict[str, FirstSearch]]
    ) -> tuple[list[dict[str, tuple[np.ndarray, np.ndarray]]], float]:
        """Run every request's first searches: the over-fetched ones in one FAISS call per
        index (per k for HNSW, whose results for a smaller k are not a prefix of a larger
        k's), the filtered ones one by one with their own exclusions. Returns each request's
        (ids, scores) by index name and the milliseconds spent."""
        start = time.perf_counter()
        found: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in searches]
        for name, index in self.indexes.items():
            groups: dict[int, list[tuple[int, np.ndarray, int]]] = {}
            for j, wanted in enumerate(searches):
                if name not in wanted:
                    continue
                vector, k, exclude = wanted[name]
                if exclude is not None:
                    ids, scores = index.search(vector[None, :], k, exclude)
                    found[j][name] = (ids[0], scores[0])
                else:
                    groups.setdefault(k if index.kind == "hnsw" else 0, []).append((j, vector, k))
            for members in groups.values():
                k = max(m[2] for m in members)
                ids, scores = index.search(np.stack([m[1] for m in members]), k)
                for row, (j, _, _) in enumerate(members):
                    found[j][name] = (ids[row], scores[row])
        return found, (time.perf_counter() - start) * 1e3

    def similar(self, item_id: str, k: int) -> SimilarResponse:
        """Item-to-item: WALS factors, or the text index for cold items."""
        if item_id not in self.items:
            raise UnknownItem(item_id)
        if k > self.settings.max_k:
            raise InputError("k", f"k must be <= {self.settings.max_k}")
        clock = Stopwatch()
        start = time.perf_counter()
        item = self.items.index(item_id)
        cold = bool(self.cold_items[item])  # the training's own cold rule, exported
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

    def warm_up(self) -> None:
        """A few real requests before the bundle serves: the first ONNX and FAISS calls pay
        for lazy initialisation, which no client should wait for."""
        user = self.example_user()
        for req in (
            RecommendRequest(query="warm up", k=5),
            RecommendRequest(user_id=user, k=5),
            RecommendRequest(user_id=user, query="warm up the encoder", k=5),
        ):
            result = self.recommend_batch([req])[0]
            if isinstance(result, Exception):
                raise result

    def example_user(self) -> str | None:
        return self.users.ids[0] if len(self.users) else None
