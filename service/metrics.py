"""Prometheus metrics, one registry per app (no module-level state).

With several uvicorn workers each is its own process: ``walrus serve`` then sets
``PROMETHEUS_MULTIPROC_DIR`` before they start, prometheus-client writes every value to a
memory-mapped file there, and ``/metrics`` (answered by whichever worker) adds up all of
them (prometheus-client's multiprocess mode). Gauges say how they combine across workers.
"""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Request counts and latencies per endpoint, latency per stage, and the batcher's,
    cache's and load shedding's counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_DIR) or None
        self._exposition: tuple[float, bytes] | None = None
        self._exposition_lock = threading.Lock()
        self._requests(self.registry)
        self._batching(self.registry)
        self._bundles(self.registry)
        self._events(self.registry)

    def _requests(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "walrus_requests",
            "Requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "walrus_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "walrus_stage_seconds",
            "Latency of one stage of a request: encode, fold_in, ann, rerank.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.disconnects = Counter(
            "walrus_client_disconnects",
            "Requests whose client left before the answer; their queued work was dropped.",
            registry=r,
        )

    def _batching(self, r: CollectorRegistry) -> None:
        self.batch_size = Histogram(
            "walrus_batch_size",
            "Requests served per dynamic batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.shed = Counter(
            "walrus_shed_requests",
            "Requests answered 503 because the batcher's queue was full.",
            registry=r,
        )
        self.deadline_misses = Counter(
            "walrus_deadline_misses",
            "Requests answered 504 because WALRUS_FRONT__DEADLINE_MS passed.",
            registry=r,
        )
        self.failed_batches = Counter(
            "walrus_failed_batches",
            "Batches that raised; each of their requests was then served again alone.",
            registry=r,
        )
        self.batcher_restarts = Counter(
            "walrus_batcher_restarts",
            "Batcher threads found dead (a BaseException out of a batch) and started again.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "walrus_queue_depth",
            "Requests waiting for the dynamic batcher (all workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_hits = Counter(
            "walrus_query_cache_hits", "Queries answered from the embedding cache.", registry=r
        )
        self.cache_misses = Counter(
            "walrus_query_cache_misses", "Queries the encoder had to encode.", registry=r
        )

    def _bundles(self, r: CollectorRegistry) -> None:
        self.bundle = Gauge(
            "walrus_bundle",
            "1 for the bundle that serves, by bundle id.",
            ["bundle_id"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.bundle_refused = Gauge(
            "walrus_bundle_refused",
            "Bundles refused at load or reload, and why.",
            ["path", "reason"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.experiment_stops = Counter(
            "walrus_experiment_guardrail_stops",
            "Experiments whose candidate the guardrail stopped.",
            registry=r,
        )
        self.reloads = Counter(
            "walrus_bundle_loads",
            "Bundle loads by result: loaded or refused.",
            ["result"],
            registry=r,
        )

    def _events(self, r: CollectorRegistry) -> None:
        self.events = Counter(
            "walrus_events",
            "Events posted to /v1/events, by outcome: accepted, rejected (one bad event), "
            "unavailable (Redis did not take the batch: 503).",
            ["outcome"],
            registry=r,
        )
        self.events_unused = Counter(
            "walrus_events_unused",
            "Answers served from the bundle alone because Redis did not answer in time.",
            registry=r,
        )
        self.attribution_records = Counter(
            "walrus_attribution_records",
            "Answer records for attribution, by outcome: stored, over_budget (the minute's "
            "share of WALRUS_EVENTS__ATTRIBUTION_MAX_RECORDS was used up), lost (Redis down "
            "or too slow).",
            ["outcome"],
            registry=r,
        )
        self.online_answers = Counter(
            "walrus_online_answers",
            "Answers served, by bundle and experiment arm.",
            ["bundle_id", "arm"],
            registry=r,
        )
        self.online_events = Counter(
            "walrus_online_events",
            "Accepted events by type, joined to the bundle and arm of the answer they name; "
            "bundle_id and arm are empty for an event naming no answer Redis still keeps.",
            ["bundle_id", "arm", "type"],
            registry=r,
        )

    def bundle_served(self, bundle_id: str, previous: str | None) -> None:
        if previous is not None and previous != bundle_id:
            self.bundle.labels(previous).set(0)
        self.bundle.labels(bundle_id).set(1)

    def count_cache_lookup(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            if stage != "total":
                self.stage.labels(stage).observe(ms / 1000.0)

    def exposition_cached(self, max_age_s: float = 1.0) -> bytes:
        """``exposition``, built at most once per ``max_age_s``: with several processes a
        build re-reads every process's files, and a scraper (or a flood) asking often must
        not pay that each time. Thread-safe: the route builds it off the event loop."""
        with self._exposition_lock:
            now = time.monotonic()
            if self._exposition is None or now - self._exposition[0] > max_age_s:
                self._exposition = (now, self.exposition())
            return self._exposition[1]

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this process's registry, or with several workers
        the sum over all of them."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(combined)
