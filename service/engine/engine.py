"""The engine: answers the fronts' calls with the bundle it holds.

It owns everything with state: the loaded bundle and its swaps (``Bundles``), the dynamic
batcher, the query cache, the stage and batch metrics. The same object answers in both
modes: in its own process behind a socket (``service.engine.server``), or inside the front
(inline mode, ``service.inline``). Every answer's body is the final JSON, written once here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from service.engine.batcher import Overloaded
from service.engine.events import EventStore, EventsUnavailable, accept_events
from service.engine.lifecycle import Bundles, NotReady
from service.engine.recommender import InputError, UnknownItem
from service.messages import (
    Answer,
    Call,
    Events,
    EventsAccepted,
    Readiness,
    Recommend,
    Recommendations,
    Reload,
    Similar,
    SimilarItems,
    Status,
    UserIds,
    Users,
    error,
    json_body,
)
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("walrus.service.engine")
ROUTES: dict[type, str] = {
    Recommend: "POST /v1/recommend",
    Similar: "GET /v1/items/{item_id}/similar",
    Status: "GET /readyz",
    Reload: "POST /admin/reload",
    Events: "POST /v1/events",
    Users: "GET /v1/users",
}


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = event_store(settings)
        self.bundles = Bundles(settings, metrics, self.events)
        self._events_watch: asyncio.Task[None] | None = None
        self.handlers: dict[type, Callable[[Any], Awaitable[Answer]]] = {
            Recommend: self.recommend,
            Similar: self.similar,
            Reload: self.reload,
            Events: self.store_events,
        }
        # /similar and reloads each have their own threads: a flood of one cannot starve
        # the other (the batcher has its own too).
        self.similar_pool = ThreadPoolExecutor(settings.worker_threads, "walrus-similar")
        self.similar_waiting = 0  # /similar calls queued or running

    async def start(self) -> None:
        if self.events is not None:
            self._events_watch = asyncio.create_task(self.events.watch())
        await self.bundles.start()

    async def close(self) -> None:
        await self.bundles.close()
        self.similar_pool.shutdown(wait=False, cancel_futures=True)
        if self._events_watch is not None:
            self._events_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_watch
        if self.events is not None:
            self.events.close()

    async def answer(self, call: Call) -> Answer:
        """The answer to one call; never raises for a request's own failure."""
        try:
            if isinstance(call, Status):
                return self.status(call)
            if isinstance(call, Users):
                return self.user_ids(call)
            if isinstance(call, Recommend | Similar | Reload | Events):
                return await self.handlers[type(call)](call)
            return error(0, 400, f"the engine does not answer {type(call).__name__}")
        except NotReady as exc:
            return error(call.id, 503, f"not ready: {exc}", retry_after=1)
        except Overloaded:
            self.metrics.shed.inc()
            return error(call.id, 503, "overloaded: retry shortly", retry_after=1)
        except InputError as exc:
            detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]
            return error(call.id, 422, detail)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: logged with its traceback, answered as a clean 500
            log.exception("unhandled error on %s", ROUTES.get(type(call), type(call).__name__))
            return error(call.id, 500, "internal error")

    async def recommend(self, call: Recommend) -> Answer:
        return self.answered(call.id, await self.bundles.recommend(call))

    def answered(self, call_id: int, result: Recommendations | SimilarItems) -> Answer:
        """A served result as its 200 answer: its stages go to /metrics, and its body
        carries them only with WALRUS_DEBUG_TIMINGS."""
        self.metrics.observe_stages(result.timings_ms)
        if not self.settings.debug_timings:
            result = msgspec.structs.replace(result, timings_ms={})
        return Answer(call_id, 200, json_body(result), bundle_id=result.bundle_id)

    async def similar(self, call: Similar) -> Answer:
        """On its own threads (a flood of it cannot stall reloads or the batcher), with the
        batcher's admission rule: past WALRUS_MAX_QUEUE waiting, 503 at once. A caller that
        leaves or passes its deadline cancels its call; if still queued, it is never run."""
        recommender = self.bundles.recommender()
        limit = self.settings.max_queue
        if limit and self.similar_waiting >= limit:
            raise Overloaded(f"{self.similar_waiting} /similar calls are waiting")
        loop = asyncio.get_running_loop()
        self.similar_waiting += 1
        try:
            result = await loop.run_in_executor(self.similar_pool, recommender.similar, call)
        except UnknownItem:
            return error(call.id, 404, f"unknown item_id {call.item_id!r}")
        finally:
            self.similar_waiting -= 1
        return self.answered(call.id, result)

    async def store_events(self, call: Events) -> Answer:
        """Check each event against the serving bundle, store the good ones in Redis in one
        pipeline: 202 once Redis acknowledged them, 503 (Retry-After) when it did not."""
        store = self.events
        if store is None:
            return error(call.id, 404, "events are off: set WALRUS_REDIS_URL")
        recommender = self.bundles.recommender()
        accepted, rejected = accept_events(call.events, recommender.offers, time.time())
        if accepted:
            try:
                await asyncio.to_thread(store.append, accepted)
            except EventsUnavailable as exc:
                self.metrics.events.labels("unavailable").inc(len(call.events))
                detail = f"events not stored: {exc}"
                return error(call.id, 503, detail, retry_after=store.breaker.retry_after())
        self.metrics.events.labels("accepted").inc(len(accepted))
        self.metrics.events.labels("rejected").inc(len(rejected))
        body = json_body(EventsAccepted(len(accepted), rejected))
        return Answer(call.id, 202, body, bundle_id=recommender.bundle_id)

    def user_ids(self, call: Users) -> Answer:
        recommender = self.bundles.recommender()
        found = recommender.users.starting_with(call.prefix, call.limit)
        body = json_body(UserIds(found, len(recommender.users)))
        return Answer(call.id, 200, body, bundle_id=recommender.bundle_id)

    def status(self, call: Status) -> Answer:
        ready = self.readiness()
        return Answer(call.id, 200 if ready.ready else 503, json_body(ready), ready.bundle_id)

    def readiness(self) -> Readiness:
        bundles = self.bundles
        serving = bundles.serving
        if serving is None:
            return Readiness(ready=False, reason=bundles.reason, refused=dict(bundles.refused))
        if bundles.revive(serving):  # red for this answer; the next one sees it serving again
            return Readiness(
                ready=False,
                bundle_id=serving.recommender.bundle_id,
                reason="a batcher thread had died; it was started again",
                refused=dict(bundles.refused),
            )
        r = serving.recommender
        events = "off" if self.events is None else self.events.status()
        return Readiness(
            ready=True,
            bundle_id=r.bundle_id,
            onnx_providers=r.onnx_providers,
            faiss=r.faiss_device,
            encoder_precision=r.encoder_precision,
            refused=dict(bundles.refused),
            attributes=r.bundle.attributes.schema(),
            events=events,
            counts={"users": len(r.users), "items": len(r.items) - len(r.withdrawn)},
            # Still ready: answers come from the bundle alone, which beats taking every
            # replica out of the load balancer when the shared Redis is down.
            degraded=[f"events: {events}"] if events not in ("off", "ok") else [],
        )

    async def reload(self, call: Reload) -> Answer:
        result = await self.bundles.reload()
        return Answer(call.id, 200, json_body(result), bundle_id=result.bundle_id)


def event_store(settings: Settings) -> EventStore | None:
    """The Redis events WALRUS_REDIS_URL names; None when it is empty (events off)."""
    if not settings.redis_url:
        return None
    return EventStore(
        settings.redis_url,
        settings.events_per_user,
        settings.events_ttl_s,
        settings.redis_timeout_ms / 1000,
        settings.redis_breaker_s,
    )
