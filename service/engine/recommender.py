"""The loaded bundle and what a request does with it: encode -> ANN -> rerank.

Runs on onnxruntime, tokenizers, faiss and numpy only. The request logic itself is
``models.core.hybrid`` (numpy), shared with offline evaluation.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar, cast

import numpy as np

from export.runtime import LoadOptions, OnnxTextEncoder, ServedIndexes, load_bundle, usable_cpus
from models.core.attributes import FilterError
from models.core.errors import WalrusError
from models.core.events import DEFAULT_EVENT_TYPES
from models.core.features import COLUMN
from models.core.hybrid import PoolSizes, build_request, eligible_count, recommend_batch
from models.core.types import Request, no_items
from service.api import Diversity as DiversitySpec
from service.api import (
    Explanation,
    Filter,
    InvalidInput,
    Item,
    NotFound,
    Recommendations,
    SimilarItems,
    Source,
    check,
)
from service.engine.attribution import recommendation_id
from service.engine.cache import QueryCache
from service.engine.events import EventStore, EventsUnavailable
from service.engine.rules import FilterMasks, diversity, explanations
from service.messages import Recommend, Similar
from service.metrics import Metrics
from service.settings import Settings, process_plan

log = logging.getLogger("walrus.service.recommender")
P = ParamSpec("P")
R = TypeVar("R")
BatchFn = Callable[[list[Recommend]], list[Recommendations | Exception]]


class InjectedFault(WalrusError, RuntimeError):
    """The fault ``WALRUS_ENGINE__FAULT_QUERY`` asks for: stands for a bug inside a batch."""


def with_fault(serve: BatchFn, query: str) -> BatchFn:
    """``serve`` that raises for a whole batch holding a request whose query is ``query``:
    the drill ``make chaos`` runs (``WALRUS_ENGINE__FAULT_QUERY``), like Envoy's fault filter. Only
    installed when that setting is given, so the request path never checks for it."""

    def faulty(reqs: list[Recommend]) -> list[Recommendations | Exception]:
        if any(req.query == query for req in reqs):
            raise InjectedFault(f"a fault injected by WALRUS_ENGINE__FAULT_QUERY={query!r}")
        return serve(reqs)

    return faulty


class UnknownItem(NotFound):
    """An item id that is not in the bundle (404)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"unknown item_id {item_id!r}")


class Stopwatch:
    """Milliseconds per named stage of one request."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def timed(self, stage: str, fn: Callable[P, R]) -> Callable[P, R]:
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

        return wrapper


@dataclass(frozen=True)
class Prepared:
    """One request of a batch, resolved: its place in the batch, the core's ``Request``,
    its own stage times and warnings, the user (None: not in the bundle) and the fresh item
    indices (history and recent events) it was folded in from."""

    index: int
    request: Request
    clock: Stopwatch
    warnings: list[str]
    user: int | None
    history: np.ndarray


class TimedSearcher:
    """The served indexes as the core's searcher, adding each search's time to ``ann``."""

    def __init__(self, indexes: ServedIndexes, clock: Stopwatch) -> None:
        self.filtering = indexes.filtering
        self.search = clock.timed("ann", indexes.search)


class Recommender:
    """What a request does with one loaded bundle. Thread-safe for concurrent requests."""

    def __init__(
        self,
        bundle: Path,
        settings: Settings,
        query_cache: QueryCache | None = None,
        events: EventStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.plan = plan = process_plan(settings, usable_cpus())
        self.bundle = loaded = load_bundle(
            bundle,
            LoadOptions(
                settings.device,
                settings.engine.encoder_precision,
                plan.threads,
                settings.engine.verify_parity,
                encoder_sessions=plan.sessions,
                trusted_keys=settings.trusted_keys,
            ),
        )
        self.settings = settings
        self.path, self.bundle_id = loaded.path, loaded.bundle_id
        self.users, self.items, self.titles = loaded.users, loaded.items, loaded.titles
        self.tables, self.indexes, self.encoder = loaded.tables, loaded.indexes, loaded.encoder
        self.encoders: queue.SimpleQueue[OnnxTextEncoder] = queue.SimpleQueue()
        for encoder in loaded.encoders:  # each batcher thread encodes with its own session
            self.encoders.put(encoder)
        self.head, self.encoder_precision = loaded.head, loaded.encoder_precision
        self.withdrawn = loaded.withdrawn
        self.event_types = loaded.manifest.event_types or dict(DEFAULT_EVENT_TYPES)
        self.arm = "control"  # the experiment arm this bundle answers for
        self._withdrawn = frozenset(self.withdrawn.tolist())
        self.filter_masks = FilterMasks(loaded)
        candidates = loaded.manifest.candidates
        self.sizes = PoolSizes(
            settings.engine.n_wals or candidates.n_wals,
            settings.engine.n_text or candidates.n_text,
            candidates.cold_every
            if settings.engine.cold_every is None
            else settings.engine.cold_every,
        )
        on_gpu = any(ix.device == "gpu" for ix in self.indexes.indexes.values())
        self.faiss_device: Literal["cpu", "gpu"] = "gpu" if on_gpu else "cpu"
        self.query_cache = query_cache if query_cache is not None else QueryCache(0)
        self.events = events
        self.metrics = metrics
        self.onnx_providers = self.encoder.providers
        log.info(
            "bundle %s: %d users, %d items; ONNX on %s; FAISS on %s; %d threads",
            self.bundle_id,
            len(self.users),
            len(self.items),
            self.onnx_providers,
            self.faiss_device,
            plan.threads,
        )

    def _lookup(self, ids: list[str] | None, what: str, warnings: list[str]) -> np.ndarray:
        found, unknown = self.items.lookup(ids or [])
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            warnings.append(f"{what}: {len(unknown)} unknown item id(s) ignored: {shown}")
        return found

    def offers(self, item_id: str) -> bool:
        """Whether the bundle has the item and has not withdrawn it."""
        index = self.items.find(item_id)
        return index >= 0 and index not in self._withdrawn

    def seen(self, user: int) -> np.ndarray:
        """A known user's training items; withdrawn ones left out, as a compaction drops
        them, so a tombstone and its compaction answer alike."""
        row = self.bundle.seen.row(user)
        return row[~np.isin(row, self.withdrawn)] if len(self.withdrawn) else row

    def _items(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        sources: list[list[str]],
        explained: list[Explanation] | None = None,
    ) -> list[Item]:
        why: list[Explanation | None] = [None] * len(ids) if explained is None else [*explained]
        return [
            Item(self.items.ids[i], self.titles[i], float(s), cast("list[Source]", src), e)
            for i, s, src, e in zip(ids.tolist(), scores.tolist(), sources, why, strict=True)
        ]

    # ------------------------------------------------------------------ endpoints
    def recommend(self, req: Recommend) -> Recommendations:
        """One request; blocking (ONNX and FAISS): call it off the event loop."""
        (result,) = self.recommend_batch([req])
        if isinstance(result, Exception):
            raise result
        return result

    def recommend_batch(self, reqs: list[Recommend]) -> list[Recommendations | Exception]:
        """Serve requests together, the dynamic batcher's unit of work: one encoder call for
        their distinct queries, the core's batched pools (one FAISS call per index and
        round) and one head call. Each answer equals what the request gets alone; a request
        that fails gets its exception, the others their answers."""
        start = time.perf_counter()
        results: list[Recommendations | Exception | None] = [None] * len(reqs)
        live = []
        for i, req in enumerate(reqs):
            try:
                check(req, self.settings)  # the front checked it too: the engine trusts no frame
                live.append(i)
            except InvalidInput as exc:
                results[i] = exc
        batch = Stopwatch()
        read = batch.timed("events", self._recent_events) if self.events else self._recent_events
        recent, unused = read([reqs[i] for i in live])
        encoded, encode_ms = self._encode({q for i in live if (q := reqs[i].query) is not None})
        prepared: list[Prepared] = []
        for i in live:
            try:
                events = recent.get(reqs[i].user_id or "", [])
                prepared.append(self._prepare(i, reqs[i], encoded, encode_ms, events, unused))
            except Exception as exc:  # one request's bug must not fail the batch
                results[i] = exc
        recs = recommend_batch(
            self.tables,
            [p.request for p in prepared],
            TimedSearcher(self.indexes, batch),
            batch.timed("rerank", self.head.score),
            self.sizes,
        )
        for p, rec in zip(prepared, recs, strict=True):
            i, user, clock = p.index, p.user, p.clock
            explained = None
            if reqs[i].explain:
                seen = self.seen(user) if user is not None else no_items()
                interactions = np.unique(np.concatenate([seen, p.history]).astype(np.int64))
                explained = explanations(self.bundle, p.request, interactions, rec)
            clock.ms.update(batch.ms)
            clock.ms["total"] = (time.perf_counter() - start) * 1e3
            results[i] = Recommendations(
                items=self._items(rec.items, rec.scores, rec.sources, explained),
                user_known=user is not None,
                bundle_id=self.bundle_id,
                recommendation_id=recommendation_id(),
                arm=self.arm,
                timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
                warnings=p.warnings,
            )
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
        encoder = self.encoders.get()
        try:
            vectors = encoder.encode(missing)
        finally:
            self.encoders.put(encoder)
        for query, vector in zip(missing, vectors, strict=True):
            encoded[query] = vector
            self.query_cache.put(self.bundle_id, query, vector)
        return encoded, (time.perf_counter() - start) * 1e3

    def _recent_events(self, reqs: list[Recommend]) -> tuple[dict[str, list[str]], str | None]:
        """The recent events of a batch's users (one Redis round trip), and, when Redis did
        not answer, no events and the warning their answers carry."""
        users = [req.user_id for req in reqs if req.user_id is not None]
        if self.events is None or not users:
            return {}, None
        try:
            return self.events.recent(users), None
        except EventsUnavailable as exc:
            if self.metrics is not None:
                self.metrics.events_unused.inc(len(users))
            return {}, f"recent events were not used: {exc}"

    def _prepare(
        self,
        index: int,
        req: Recommend,
        encoded: dict[str, np.ndarray],
        encode_ms: float,
        events: list[str],
        events_unused: str | None,
    ) -> Prepared:
        """Resolve ids and vectors: the batch's request ``index`` as ``models.core.hybrid``
        takes it."""
        clock = Stopwatch()
        warnings: list[str] = []
        user_id = req.user_id
        found = self.users.find(user_id) if user_id is not None else -1
        user = found if found >= 0 else None
        if user_id is not None and events_unused is not None:
            warnings.append(events_unused)
        if user_id is not None and user is None and not events:
            warnings.append(f"user_id {user_id!r} is unknown: served without a user vector")
        # Recent events are history the caller did not have to send; an item the bundle no
        # longer has (withdrawn since) is skipped without a word.
        history = np.concatenate(
            [self._lookup(req.history, "history", warnings), self.items.lookup(events)[0]]
        )
        exclude = self._lookup(req.exclude, "exclude", warnings)
        query_vector = None
        if req.query is not None:
            query_vector = encoded[req.query]
            clock.ms["encode"] = encode_ms
        request = build_request(
            req.k,
            user_vector=np.asarray(self.bundle.user_factors[user]) if user is not None else None,
            seen=self.seen(user) if user is not None else np.zeros(0, np.int64),
            history=history,
            exclude=np.concatenate([exclude, self.withdrawn]),
            exclude_seen=req.exclude_seen,
            query_vector=query_vector,
            item_text_embeddings=self.tables.item_text_embeddings,
            fold_in=clock.timed("fold_in", self.bundle.fold_in),
        )
        request = self.with_rules(request, req.filter, req.diversity, req.offset, warnings)
        return Prepared(index, request, clock, warnings, user, history)

    def with_rules(
        self,
        request: Request,
        spec: Filter | None,
        spread: DiversitySpec | None,
        offset: int,
        warnings: list[str],
    ) -> Request:
        """The request with its filter, diversity and page; a filter or diversity that does
        not fit this bundle's attributes is a 422 naming the part."""
        try:
            allowed = self.filter_masks.mask(spec, self._lookup, warnings)
            request = replace(
                request, allowed=allowed, offset=offset, diversity=diversity(self.bundle, spread)
            )
        except FilterError as exc:
            raise InvalidInput(str(exc), exc.field) from None
        if allowed is not None and (passing := eligible_count(self.tables, request)) < (
            offset + request.k
        ):
            warnings.append(
                f"filter: {passing} items pass (exclusions taken out), fewer than "
                f"offset + k = {offset + request.k}"
            )
        return request

    def similar(self, call: Similar) -> SimilarItems:
        """Item-to-item: the nearest items by WALS factors (by text for cold items), ranked
        by that similarity through the core's ranking, so filters, diversity and pages work
        as for /v1/recommend."""
        if not self.offers(call.item_id):
            raise UnknownItem(call.item_id)
        check(call, self.settings)
        start = time.perf_counter()
        item = self.items.index(call.item_id)
        cold = bool(self.tables.item_cold[item])  # the training's own cold rule, exported
        source: Literal["wals", "text"] = "text" if cold else "wals"
        vector = self.tables.index(source)[item]
        request = Request(
            call.k,
            user_vector=None if cold else vector,
            query_vector=vector if cold else None,
            exclude=np.concatenate([[item], self.withdrawn]).astype(np.int64),
        )
        warnings: list[str] = []
        request = self.with_rules(request, call.filter, call.diversity, call.offset, warnings)
        similarity = COLUMN["query_score" if cold else "wals_score"]
        clock = Stopwatch()
        (rec,) = recommend_batch(
            self.tables,
            [request],
            TimedSearcher(self.indexes, clock),
            lambda features: features[:, similarity],
            replace(self.sizes, cold_every=0),
        )
        clock.ms["total"] = (time.perf_counter() - start) * 1e3
        return SimilarItems(
            item_id=call.item_id,
            source=source,
            items=self._items(rec.items, rec.scores, rec.sources),
            bundle_id=self.bundle_id,
            recommendation_id=recommendation_id(),
            arm=self.arm,
            timings_ms={k: round(v, 3) for k, v in clock.ms.items()},
            warnings=warnings,
        )

    def warm_up(self) -> None:
        """A real request down every path before the bundle serves (query, known user,
        history fold-in, /similar): the first ONNX and FAISS calls pay for lazy
        initialisation, which no client should wait for, and a bundle that would fail one
        of them is refused here instead of answering 500s."""
        user = self.example_user()
        item = self.items.ids[0] if len(self.items) else None
        for req in (
            Recommend(query="warm up", k=5),
            Recommend(user_id=user, k=5),
            Recommend(user_id=user, query="warm up the encoder", k=5),
            Recommend(history=[item] if item is not None else None, k=5),
        ):
            result = self.recommend_batch([req])[0]
            if isinstance(result, Exception):
                raise result
        if item is not None:
            self.similar(Similar(item_id=item, k=5))

    def example_user(self) -> str | None:
        return self.users.ids[0] if len(self.users) else None
