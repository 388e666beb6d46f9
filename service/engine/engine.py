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
import redis

from export.runtime import usable_cpus
from service.api import (
    ApiError,
    ArmReport,
    Disabled,
    Event,
    EventsAccepted,
    ExperimentReport,
    Failure,
    Interval,
    InvalidInput,
    Readiness,
    Recommendations,
    Reloaded,
    SimilarItems,
    Unavailable,
    UserIds,
    check,
)
from service.engine.attribution import AnswerRecord, Attribution, issued_ms
from service.engine.batcher import Overloaded
from service.engine.events import EventStore, EventsUnavailable, accept_events
from service.engine.experiments import difference, wilson
from service.engine.lifecycle import Bundles
from service.messages import (
    Answer,
    Call,
    Events,
    Experiment,
    Experiments,
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
Result = (
    Recommendations
    | SimilarItems
    | Readiness
    | EventsAccepted
    | UserIds
    | Reloaded
    | ExperimentReport
)


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = event_store(settings)
        self.attribution = attribution(settings, self.events, metrics)
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
            Experiment: self.experiment,
            Experiments: self.experiments,
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
        if self.attribution is not None:
            self.attribution.close()
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
            result = self.served(result, getattr(call, "user_id", None) or "")
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

    def served(
        self, result: Recommendations | SimilarItems, user_id: str
    ) -> Recommendations | SimilarItems:
        """A served result as it is answered: counted by bundle and arm, recorded for the
        events that will name its id, its stages in /metrics; it carries them only with
        WALRUS_ENGINE__DEBUG_TIMINGS."""
        self.metrics.online_answers.labels(result.bundle_id, result.arm).inc()
        if self.attribution is not None:
            items = [item.item_id for item in result.items]
            record = AnswerRecord(
                user_id,
                result.bundle_id,
                result.arm,
                issued_ms(result.recommendation_id) or 0,
                items,
            )
            self.attribution.record(result.recommendation_id, record)
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
        pipeline: accepted once Redis acknowledged them, ``Unavailable`` when it did not.
        Then join those naming a ``recommendation_id`` to its answer's bundle and arm."""
        store = self.events
        if store is None:
            raise Disabled("events are off: set WALRUS_EVENTS__REDIS_URL")
        check(call, self.settings)
        recommender = self.bundles.recommender()
        types = recommender.event_types
        accepted, rejected = accept_events(call.events, recommender.offers, types, time.time())
        if accepted:
            try:
                await asyncio.to_thread(store.append, accepted)
            except EventsUnavailable as exc:
                self.metrics.events.labels("unavailable").inc(len(call.events))
                wait = store.breaker.retry_after()
                raise Unavailable(f"events not stored: {exc}", retry_after=wait) from None
        self.metrics.events.labels("accepted").inc(len(accepted))
        self.metrics.events.labels("rejected").inc(len(rejected))
        refused = {r.index for r in rejected}
        kept = [e for i, e in enumerate(call.events) if i not in refused]
        attributed = await asyncio.to_thread(self.attribute, kept)
        for (bundle_id, arm), kinds in attributed.items():  # on the loop: it owns the arms
            impressions, clicks = kinds.get("impression", 0), kinds.get("click", 0)
            self.bundles.observe_events(bundle_id, arm, impressions, clicks)
        total = sum(n for kinds in attributed.values() for n in kinds.values())
        return EventsAccepted(len(accepted), total, rejected)

    def attribute(self, events: list[Event]) -> dict[tuple[str, str], dict[str, int]]:
        """Count accepted events by the bundle, arm and type of the answer each names (an
        event of an item that answer did not list, or of an id Redis no longer keeps, counts
        as unattributed); the attributed ones' counts by bundle and arm, then type."""
        records: dict[str, AnswerRecord] = {}
        named = [e.recommendation_id for e in events if e.recommendation_id]
        if self.attribution is not None and named:
            try:
                records = self.attribution.lookup(named)
            except redis.RedisError as exc:
                log.warning("attribution lookup failed, events counted unattributed: %s", exc)
        counts: dict[tuple[str, str, str], int] = {}
        for event in events:
            record = records.get(event.recommendation_id or "")
            joined = record is not None and event.item_id in record.item_ids
            where = (record.bundle_id, record.arm) if joined and record else ("", "")
            key = (*where, event.type or "event")
            counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            self.metrics.online_events.labels(*key).inc(n)
        attributed = {k: n for k, n in counts.items() if k[0]}
        if self.attribution is not None and attributed:
            try:
                self.attribution.count_events(attributed)
            except redis.RedisError as exc:
                log.warning("attributed events not counted in Redis: %s", exc)
        by_arm: dict[tuple[str, str], dict[str, int]] = {}
        for (bundle_id, arm, kind), n in attributed.items():
            by_arm.setdefault((bundle_id, arm), {})[kind] = n
        return by_arm

    async def experiment(self, call: Experiment) -> ExperimentReport:
        await self.bundles.steer(call)
        return await self.experiments(None)

    async def experiments(self, _call: Experiments | None) -> ExperimentReport:
        """The experiment as this engine serves it, and each arm's online figures (shared
        by every replica: the counts live in Redis)."""
        bundles = self.bundles
        control = bundles.recommender().bundle_id
        plan = bundles.plan
        online: dict[tuple[str, str], dict[str, int]] = {}
        attributing = "off" if self.attribution is None else self.attribution.status()
        if self.attribution is not None:
            try:
                online = await asyncio.to_thread(self.attribution.online)
            except redis.RedisError as exc:
                attributing = f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0]
        candidate = plan.candidate if plan is not None else None
        arms = {
            "control": arm_report(control, online.get((control, "control"), {})),
            "candidate": arm_report(candidate, online.get((candidate or "", "candidate"), {})),
        }
        rates = [(a.events.get("click", 0), a.events.get("impression", 0)) for a in arms.values()]
        return ExperimentReport(
            running=plan is not None and plan.running and bundles.candidate is not None,
            candidate=candidate,
            share=plan.share if plan is not None else 0.0,
            started_at=plan.started_at if plan is not None else None,
            stopped=plan.stopped if plan is not None else None,
            arms=arms,
            ctr_difference=interval(difference(rates[0], rates[1])),
            attribution=attributing,
        )

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
        attributing = "off" if self.attribution is None else self.attribution.status()
        return Readiness(
            ready=True,
            bundle_id=r.bundle_id,
            onnx_providers=r.onnx_providers,
            faiss=r.faiss_device,
            encoder_precision=r.encoder_precision,
            refused=dict(bundles.refused),
            attributes=r.bundle.attributes.schema(),
            events=events,
            attribution=attributing,
            event_types=r.event_types,
            counts={"users": len(r.users), "items": len(r.items) - len(r.withdrawn)},
            # Still ready: answers come from the bundle alone, which beats taking every
            # replica out of the load balancer when the shared Redis is down.
            degraded=[f"events: {events}"] if events not in ("off", "ok") else [],
        )

    async def reload(self, _call: Reload) -> Reloaded:
        return await self.bundles.reload()


def interval(found: tuple[float, float, float] | None) -> Interval:
    return Interval(None, None, None) if found is None else Interval(*found)


def arm_report(bundle_id: str | None, counts: dict[str, int]) -> ArmReport:
    events = {kind: n for kind, n in counts.items() if kind != "answers"}
    ctr = wilson(events.get("click", 0), events.get("impression", 0))
    return ArmReport(bundle_id, counts.get("answers", 0), events, interval(ctr))


def attribution(
    settings: Settings, events: EventStore | None, metrics: Metrics
) -> Attribution | None:
    """Answer records in the events' Redis (its client and breaker); None without Redis."""
    given = settings.events
    if events is None or not given.attribution:
        return None

    def count(outcome: str, n: int) -> None:
        metrics.attribution_records.labels(outcome).inc(n)

    return Attribution(
        events.client, events.breaker, given.attribution_ttl_s, given.attribution_max_records, count
    )


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
