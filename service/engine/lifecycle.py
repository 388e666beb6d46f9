"""Which bundle serves, and how another replaces it without dropping a request.

``Bundles`` loads the bundle ``WALRUS_BUNDLE`` names at start (retrying with backoff), and
later when its ``current`` link moves (polled every ``WALRUS_ENGINE__RELOAD_INTERVAL_S``) or
when told (``POST /admin/reload``). A new bundle is loaded next to the serving one and must
pass every check before it serves: the manifest (format, file list, sha256 of every file),
sizes cross-checked between files, and a warm-up with real requests. Then one assignment swaps
it in; the old batcher stops taking requests, serves what it already queued, and is dropped, so a
request in flight finishes on the bundle it started with. A bundle that fails a check is
refused with its reason (in ``/readyz`` and ``/metrics``) and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from export.format import CURRENT, resolve_bundle, switch_current, utc_now
from export.remote import KEEP_LOCAL, BundleStore, is_remote
from service.api import (
    ApiError,
    Conflict,
    Disabled,
    ExperimentRequest,
    InvalidInput,
    Recommendations,
    Reloaded,
    Unavailable,
)
from service.engine.batcher import Batcher, Stopped
from service.engine.cache import QueryCache
from service.engine.events import EventStore
from service.engine.experiments import (
    PLAN_FILE,
    ExperimentError,
    ExperimentPlan,
    Guardrail,
    arm_of,
    new_salt,
    read_plan,
    write_plan,
)
from service.engine.recommender import BatchFn, Recommender, with_fault
from service.messages import Recommend
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("walrus.service.lifecycle")


@dataclass(frozen=True)
class Serving:
    """One loaded bundle and the batcher in front of it: swapped as one."""

    recommender: Recommender
    batcher: Batcher[Recommend, Recommendations]


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Bundles:
    def __init__(
        self, settings: Settings, metrics: Metrics, events: EventStore | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = events
        self.cache = QueryCache(settings.engine.query_cache_size, metrics.count_cache_lookup)
        self.serving: Serving | None = None
        self.candidate: Serving | None = None  # an experiment's second bundle
        self.plan: ExperimentPlan | None = None
        engine = settings.engine
        self.guardrail = Guardrail(
            engine.guardrail_factor,
            engine.guardrail_min_answers,
            min_impressions=engine.guardrail_min_impressions,
        )
        self._stopping: asyncio.Future[None] | None = None  # a guardrail stop's clean-up
        self.reason: str | None = "loading the bundle"
        self.refused: dict[str, str] = {}  # bundle path -> why it was refused
        source = settings.bundle
        self.store = BundleStore(source) if is_remote(source) else None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ requests
    def recommender(self) -> Recommender:
        """The serving bundle's recommender; ``NotReady`` while there is none."""
        serving = self.serving
        if serving is None:
            raise NotReady(self.reason or "not ready")
        return serving.recommender

    async def recommend(self, request: Recommend) -> Recommendations:
        """Hand the request to its arm's batcher: control's (the bundle at ``current``), or
        an experiment's candidate for the users the plan gives it. Reading the slot and
        queueing happen with no await between them, on the event loop, where swaps happen
        too: a request is never queued behind a stopped batcher's last batch."""
        key = request.user_id or request.assignment_key
        arm = arm_of(key, self.plan) if self.candidate is not None else "control"
        start = time.perf_counter()
        try:
            result = await self._submit(arm, request)
        except Exception as exc:
            if not isinstance(exc, ApiError):  # a bug's 500, not the request's own fault
                self._observe(arm, False, start)
            raise
        self._observe(arm, True, start)
        return result

    async def _submit(self, arm: str, request: Recommend) -> Recommendations:
        while True:
            serving = self.candidate if arm == "candidate" else self.serving
            if serving is None:
                if arm == "candidate":  # stopped between the choice and here
                    arm = "control"
                    continue
                raise NotReady(self.reason or "not ready")
            self.revive(serving)
            try:
                return await serving.batcher.submit(request)
            except Stopped:
                if arm == "control" and self.serving is serving:  # closed, not swapped
                    raise NotReady("shutting down") from None
                continue  # swapped between the choice and here: the new one serves

    def _observe(self, arm: str, ok: bool, start: float) -> None:
        if self.candidate is None:
            return
        verdict = self.guardrail.observe(arm, ok, (time.perf_counter() - start) * 1e3)
        if verdict is not None:
            self.stop_candidate(verdict)

    def observe_events(self, bundle_id: str, arm: str, impressions: int, clicks: int) -> None:
        """Attributed events of the running experiment's arms, for the guardrail's CTR."""
        slot = self.candidate if arm == "candidate" else self.serving
        if self.candidate is None or slot is None or slot.recommender.bundle_id != bundle_id:
            return
        verdict = self.guardrail.observe_events(arm, impressions, clicks)
        if verdict is not None:
            self.stop_candidate(verdict)

    def stop_candidate(self, verdict: str) -> None:
        """The guardrail's stop: no answer from the candidate from now on, on every replica
        once the plan is rewritten."""
        if self.candidate is not None:
            log.error("experiment stopped: %s", verdict)
            self.metrics.experiment_stops.inc()
            candidate, self.candidate = self.candidate, None  # no answer from it from now on
            # Refused until started again: a poll reading the plan before it is rewritten
            # must not load it back.
            self.refused[str(candidate.recommender.path)] = verdict
            if self.plan is not None:
                self.plan = msgspec.structs.replace(self.plan, stopped=verdict)
            self._stopping = asyncio.ensure_future(self._retire(candidate, self.plan))

    async def _retire(self, candidate: Serving | None, plan: ExperimentPlan | None) -> None:
        """Stop a candidate's batcher once it served what it queued; tell every replica
        (the plan on disk says why it stopped)."""
        if candidate is not None:
            candidate.batcher.stop()
            await asyncio.to_thread(candidate.batcher.join)
        folder = self.bundles_dir()
        if plan is not None and folder is not None:
            try:
                await asyncio.to_thread(write_plan, folder, plan)
            except ExperimentError as exc:
                log.error("the stopped experiment was not written: %s", exc)

    def revive(self, serving: Serving) -> int:
        """Start again the batcher threads that died; counted in /metrics."""
        revived = serving.batcher.revive()
        if revived:
            self.metrics.batcher_restarts.inc(revived)
        return revived

    # ------------------------------------------------------------------ loading
    def _locate(self) -> Path:
        """Blocking: the local folder of the bundle ``WALRUS_BUNDLE`` names now. In object
        storage: where the version ``current`` names is, or will be once pulled (one small
        read, so that a version refused before is not downloaded again at every poll)."""
        if self.store is None:
            return resolve_bundle(self.settings.bundle)
        return self.settings.bundle_cache.resolve() / self.store.current()

    def bundles_dir(self) -> Path | None:
        """The local bundles directory holding ``current`` (and an experiment's plan);
        None for a single bundle or object storage."""
        folder = Path(self.settings.bundle)
        if self.store is not None or not (folder / CURRENT).is_symlink():
            return None
        return folder

    async def sync_experiment(self) -> None:
        """Serve what the plan beside ``current`` says: load its candidate (checked and
        warmed as any bundle), or drop the candidate of a plan that stopped or is gone."""
        folder = self.bundles_dir()
        if folder is None or self.serving is None:
            return
        try:
            plan = await asyncio.to_thread(read_plan, folder)
        except ExperimentError as exc:
            self._refuse(str(folder / PLAN_FILE), str(exc))
            return
        async with self._lock:
            await self._follow(folder, plan)

    async def _follow(self, folder: Path, plan: ExperimentPlan | None) -> None:
        current = self.candidate
        wanted = plan.candidate if plan is not None and plan.running else None
        if current is not None and current.recommender.bundle_id != wanted:
            self.candidate = None
            await self._retire(current, None)
        self.plan = plan
        if plan is None or wanted is None or self.candidate is not None:
            return
        path = folder / plan.candidate
        if str(path) in self.refused:
            return
        try:
            recommender = await asyncio.to_thread(self._load, path)
        except Exception as exc:  # refused: every request stays on control
            self._refuse(str(path), one_line(exc))
            return
        recommender.arm = "candidate"
        self.guardrail.reset()
        self.candidate = self._serve(recommender)
        log.info(
            "experiment: candidate %s serves %.0f%% of users", plan.candidate, 100 * plan.share
        )

    async def steer(self, request: ExperimentRequest) -> None:
        """Start, ramp, promote or stop the experiment: the plan is written beside
        ``current`` (every replica follows it at its next poll) and followed here at once."""
        folder = self.bundles_dir()
        if folder is None:
            raise Disabled(
                "experiments need WALRUS_BUNDLE to name a local bundles directory with a "
                "`current` link (the plan is written beside it)"
            )
        serving = self.recommender()
        plan = self.plan if self.plan is not None and self.plan.running else None
        if request.action == "start":
            plan = self._new_plan(folder, request, serving.bundle_id)
        elif plan is None:
            raise Conflict(f"no experiment is running to {request.action}")
        elif request.action == "ramp":
            plan = msgspec.structs.replace(plan, share=request.share or plan.share)
        elif request.action == "stop":
            plan = msgspec.structs.replace(plan, stopped="stopped by an operator")
        else:
            await self._promote(folder, plan)
            return
        await self._write(folder, plan)
        async with self._lock:
            await self._follow(folder, plan)
        if request.action == "start" and self.candidate is None:
            reason = self.refused.get(str(folder / plan.candidate), "it was refused")
            await self._write(folder, None)
            async with self._lock:
                await self._follow(folder, None)
            raise InvalidInput(f"candidate: {reason}", "candidate")

    def _new_plan(self, folder: Path, request: ExperimentRequest, control: str) -> ExperimentPlan:
        candidate = request.candidate or ""
        if candidate == control:
            raise InvalidInput("candidate: it is the bundle at current already", "candidate")
        if "/" in candidate or candidate.startswith(".") or not (folder / candidate).is_dir():
            raise InvalidInput(f"candidate: no bundle {candidate!r} in {folder}", "candidate")
        self.refused.pop(str(folder / candidate), None)  # asked again: tried again
        share = 0.1 if request.share is None else request.share
        return ExperimentPlan(candidate, share, new_salt(), utc_now())

    async def _write(self, folder: Path, plan: ExperimentPlan | None) -> None:
        try:
            await asyncio.to_thread(write_plan, folder, plan)
        except ExperimentError as exc:
            raise Unavailable(str(exc)) from None

    async def _promote(self, folder: Path, plan: ExperimentPlan) -> None:
        """The candidate becomes ``current`` and serves everyone: swapped in as loaded (no
        second load), the old control retired once it served what it queued."""
        async with self._lock:
            candidate, old = self.candidate, self.serving
            if candidate is None:
                raise Conflict("the candidate is not loaded (refused or stopped): not promoted")
            await asyncio.to_thread(switch_current, folder, plan.candidate)
            candidate.recommender.arm = "control"
            self.serving, self.candidate, self.plan = candidate, None, None
            previous = old.recommender.bundle_id if old is not None else None
            self.metrics.bundle_served(candidate.recommender.bundle_id, previous)
            log.info("experiment: candidate %s promoted to current", plan.candidate)
        await self._write(folder, None)
        await self._retire(old, None)

    def _load(self, path: Path) -> Recommender:
        """Blocking: pull (from object storage), load, check and warm one bundle (off the
        event loop)."""
        if self.store is not None:
            keys = self.settings.trusted_keys
            serving = () if self.serving is None else (self.serving.recommender.path,)
            self.store.pull(path.parent, path.name, keys, keep=KEEP_LOCAL, spare=serving)
        recommender = Recommender(path, self.settings, self.cache, self.events, self.metrics)
        recommender.warm_up()
        return recommender

    def _serve(self, recommender: Recommender) -> Serving:
        s, m = self.settings.engine, self.metrics
        serve: BatchFn = recommender.recommend_batch
        if s.fault_query:
            serve = with_fault(serve, s.fault_query)
        batcher: Batcher[Recommend, Recommendations] = Batcher(
            serve,
            max_batch=s.max_batch,
            wait_us=s.batch_wait_us,
            workers=recommender.plan.sessions,  # one per encoder session it loaded
            max_queue=s.max_queue,
            on_batch=m.batch_size.observe,
            on_depth=m.queue_depth.set,
            on_failed_batch=lambda _size: m.failed_batches.inc(),
        )
        return Serving(recommender, batcher)

    async def start(self) -> None:
        """The first load: retried with backoff until it succeeds, the reason in /readyz (the
        operator may still be copying the bundle in)."""
        delay = 1.0
        while self.serving is None:
            try:
                result = await self.reload()
            except Exception as exc:  # a bug: logged, retried, never a silent stop
                log.exception("loading failed unexpectedly")
                result = Reloaded(None, False, one_line(exc))
            if self.serving is None:
                self.reason = f"{result.reason} (retrying in {delay:.0f} s)"
                log.error("not ready: %s", self.reason)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.settings.engine.load_retry_max_s)
        log.info(
            "ready: curl -s http://%s:%d/v1/recommend -H 'content-type: application/json' "
            '-d \'{"user_id": "%s", "query": "something to watch", "k": 5}\'',
            self.settings.host,
            self.settings.port,
            self.serving.recommender.example_user(),
        )

    async def reload(self, retry_refused: bool = True) -> Reloaded:
        """Load what ``WALRUS_BUNDLE`` names now, unless it already serves. A bundle refused
        before is tried again only with ``retry_refused`` (the poll passes False: it would be
        refused again at every interval)."""
        async with self._lock:
            old = self.serving
            try:
                path = await asyncio.to_thread(self._locate)
            except Exception as exc:  # a dangling or missing `current`: keep serving
                return self._refuse(str(self.settings.bundle), one_line(exc))
            if old is not None and old.recommender.path == path:
                return Reloaded(
                    old.recommender.bundle_id, reloaded=False, reason="already serving it"
                )
            if not retry_refused and str(path) in self.refused:
                return self._refuse(str(path), self.refused[str(path)])
            try:
                recommender = await asyncio.to_thread(self._load, path)
            except Exception as exc:  # any failed check: refused, the old bundle serves on
                return self._refuse(str(path), one_line(exc))
            self.serving = self._serve(recommender)
            self.reason = None
            self.refused.pop(str(path), None)
            self.refused.pop(str(self.settings.bundle), None)  # a dangling link was fixed
            previous = old.recommender.bundle_id if old is not None else None
            self.metrics.bundle_served(recommender.bundle_id, previous)
            self.metrics.reloads.labels("loaded").inc()
            log.info("serving bundle %s from %s", recommender.bundle_id, path)
        if old is not None:
            old.batcher.stop()  # on the event loop: nothing can queue behind it now
            await asyncio.to_thread(old.batcher.join)
            del old
            kept = [] if self.candidate is None else [self.candidate.recommender.bundle_id]
            self.cache.keep_only(recommender.bundle_id, *kept)
        await asyncio.to_thread(collect_and_freeze)  # the new bundle frozen, the old freed
        return Reloaded(recommender.bundle_id, reloaded=True)

    def _refuse(self, path: str, reason: str) -> Reloaded:
        if self.refused.get(path) != reason:  # log a refusal once, not at every poll
            log.error("bundle refused: %s: %s", path, reason)
            self.metrics.reloads.labels("refused").inc()
            self.metrics.bundle_refused.labels(path, reason).set(1)
        self.refused[path] = reason
        while len(self.refused) > 10:  # the latest few are what an operator needs
            self.refused.pop(next(iter(self.refused)))
        serving = self.serving
        return Reloaded(serving.recommender.bundle_id if serving else None, False, reason)

    async def watch(self) -> None:
        """Poll ``WALRUS_BUNDLE`` for a moved ``current`` link (or object); load what it
        names."""
        interval = self.settings.engine.reload_interval_s
        while interval > 0:
            await asyncio.sleep(interval)
            if self.serving is None:  # start() is still retrying
                continue
            self.revive(self.serving)
            try:
                await self.reload(retry_refused=False)
                await self.sync_experiment()
            except Exception:  # a bug: logged; the poll goes on, the old bundle serves
                log.exception("the reload poll failed unexpectedly")

    async def close(self) -> None:
        """Serve what is queued, then nothing: a later request is NotReady (503), never
        queued behind a stopped batcher."""
        serving, self.serving = self.serving, None
        candidate, self.candidate = self.candidate, None
        self.reason = "shutting down"
        for slot in (serving, candidate):
            if slot is not None:
                slot.batcher.stop()
                await asyncio.to_thread(slot.batcher.join)


def collect_and_freeze() -> None:
    """A bundle's load leaves many Python objects behind (its manifest, titles, the id lists
    read from JSON before they became compact arrays). Left to the cyclic garbage collector,
    every full collection walks what survives, at random requests; frozen, it is never
    walked. Frozen objects in reference cycles are never freed either,
    so after a swap everything is unfrozen and collected once, the old bundle with it."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    release_freed_memory()


def release_freed_memory() -> None:
    """Hand the heap that the old bundle's ONNX sessions and arrays freed back to the OS:
    glibc keeps freed blocks in its arenas otherwise, and resident memory would climb with
    every reload. A no-op where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class NotReady(Unavailable):
    """No bundle serves yet (503 with the reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not ready: {reason}", retry_after=1)
