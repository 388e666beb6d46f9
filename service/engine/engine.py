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

from export.runtime import usable_cpus
from service.api import (
    ApiError,
    Disabled,
    EventsAccepted,
    Failure,
    InvalidInput,
    Readiness,
    Recommendations,
    Reloaded,
    SimilarItems,
    Unavailable,
    UserIds,
    check,
)
from service.engine.batcher import Overloaded
from service.engine.events import EventStore, EventsUnavailable, accept_events
from service.engine.lifecycle import Bundles
from service.messages import (
    Answer,
    Call,
    Events,
    Recommend,
    Reload,
    Similar,
    Status,
    Users,
    failed,
    json_body,
)
from service.metrics import Metrics
from service.settings import Settings, process_plan

log = logging.getLogger("walrus.service.engine")
Result = Recommendations | SimilarItems | Readiness | EventsAccepted | UserIds | Reloaded


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = event_store(settings)
        self.bundles = Bundles(settings, metrics, self.events)
        self._events_watch: asyncio.Task[None] | None = None
        # The one dispatch: a call's type to what answers it.
        self.handlers: dict[type, Callable[[Any], Awaitable[Result]]] = {
            Recommend: self.recommend,
            Similar: self.similar,
            Reload: self.reload,
            Events: self.store_events,
            Users: self.user_ids,
            Status: self.status,
        }
        # /similar and reloads each have their own threads: a flood of one cannot starve
        # the other (the batcher has its own too).
        self.similar_pool = ThreadPoolExecutor(
            process_plan(settings, usable_cpus()).sessions, "walrus-similar"
        )
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
        """The answer to one call: its result's JSON, or the failure that stands for it;
        never raises for a request's own failure."""
        handler = self.handlers.get(type(call))
        try:
            if handler is None:
                raise InvalidInput(f"the engine does not answer {type(call).__name__}")
            result = await handler(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failed(call.id, self.failure(exc, call))
        if isinstance(result, Recommendations | SimilarItems):
            result = self.served(result)
        # The access log names the serving bundle for every answer, not only those that
        # carry its id (events, user ids).
        bundle_id = getattr(result, "bundle_id", None)
        if bundle_id is None and (serving := self.bundles.serving) is not None:
            bundle_id = serving.recommender.bundle_id
        return Answer(call.id, json_body(result), bundle_id=bundle_id)

    def failure(self, exc: Exception, call: Call) -> Failure:
        """An exception as the typed failure the front answers: the engine's own errors by
        their kind, anything else a bug (logged with its traceback, a clean 500)."""
        if isinstance(exc, Overloaded):
            self.metrics.shed.inc()
        if isinstance(exc, ApiError):  # a request's own failure, NotReady and Overloaded too
            return exc.failure()
        log.exception("unhandled error on %s", type(call).__name__, exc_info=exc)
        return Failure("internal", "internal error")

    async def recommend(self, call: Recommend) -> Recommendations:
        return await self.bundles.recommend(call)

    def served(self, result: Recommendations | SimilarItems) -> Recommendations | SimilarItems:
        """A served result as it is answered: its stages go to /metrics, and it carries
        them only with WALRUS_ENGINE__DEBUG_TIMINGS."""
        self.metrics.observe_stages(result.timings_ms)
        if not self.settings.engine.debug_timings:
            result = msgspec.structs.replace(result, timings_ms={})
        return result

    async def similar(self, call: Similar) -> SimilarItems:
        """On its own threads (a flood of it cannot stall reloads or the batcher), with the
        batcher's admission rule: past WALRUS_ENGINE__MAX_QUEUE waiting, 503 at once. A caller that
        leaves or passes its deadline cancels its call; if still queued, it is never run."""
        recommender = self.bundles.recommender()
        limit = self.settings.engine.max_queue
        if limit and self.similar_waiting >= limit:
            raise Overloaded(f"{self.similar_waiting} /similar calls are waiting")
        loop = asyncio.get_running_loop()
        self.similar_waiting += 1
        try:
            return await loop.run_in_executor(self.similar_pool, recommender.similar, call)
        finally:
            self.similar_waiting -= 1

    async def store_events(self, call: Events) -> EventsAccepted:
        """Check each event against the serving bundle, store the good ones in Redis in one
        pipeline: accepted once Redis acknowledged them, ``Unavailable`` when it did not."""
        store = self.events
        if store is None:
            raise Disabled("events are off: set WALRUS_EVENTS__REDIS_URL")
        check(call, self.settings)
        recommender = self.bundles.recommender()
        accepted, rejected = accept_events(call.events, recommender.offers, time.time())
        if accepted:
            try:
                await asyncio.to_thread(store.append, accepted)
            except EventsUnavailable as exc:
                self.metrics.events.labels("unavailable").inc(len(call.events))
                wait = store.breaker.retry_after()
                raise Unavailable(f"events not stored: {exc}", retry_after=wait) from None
        self.metrics.events.labels("accepted").inc(len(accepted))
        self.metrics.events.labels("rejected").inc(len(rejected))
        return EventsAccepted(len(accepted), rejected)

    async def user_ids(self, call: Users) -> UserIds:
        recommender = self.bundles.recommender()
        found = recommender.users.starting_with(call.prefix, call.limit)
        return UserIds(found, len(recommender.users))

    async def status(self, _call: Status) -> Readiness:
        return self.readiness()

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

    async def reload(self, _call: Reload) -> Reloaded:
        return await self.bundles.reload()


def event_store(settings: Settings) -> EventStore | None:
    """The Redis events WALRUS_EVENTS__REDIS_URL names; None when it is empty (events off)."""
    events = settings.events
    if not events.redis_url:
        return None
    return EventStore(
        events.redis_url,
        events.per_user,
        events.ttl_s,
        events.redis_timeout_ms / 1000,
        events.redis_breaker_s,
    )
