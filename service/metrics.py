"""Prometheus metrics, one registry per app (no module-level state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.cache import QueryCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Request counts and latencies per endpoint, and latency per stage."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "walrus_requests",
            "Requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "walrus_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "walrus_stage_seconds",
            "Latency of one stage of a request: encode, fold_in, ann, rerank.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.batch_size = Histogram(
            "walrus_batch_size",
            "Requests served per dynamic batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "walrus_shed_requests",
            "Requests answered 503 because the batcher's queue was full.",
            registry=self.registry,
        )
        self.deadline_misses = Counter(
            "walrus_deadline_misses",
            "Requests answered 504 because WALRUS_DEADLINE_MS passed.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "walrus_queue_depth",
            "Requests waiting for the dynamic batcher.",
            registry=self.registry,
        )

    def watch_cache(self, cache: QueryCache) -> None:
        self.registry.register(_CacheCollector(cache))

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            if stage != "total":
                self.stage.labels(stage).observe(ms / 1000.0)


class _CacheCollector(Collector):
    """The query cache's own counts, read when ``/metrics`` is scraped."""

    def __init__(self, cache: QueryCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "walrus_query_cache_hits", "Queries answered from the embedding cache.",
            value=self.cache.hits,
        )  # fmt: skip
        yield CounterMetricFamily(
            "walrus_query_cache_misses", "Queries the encoder had to encode.",
            value=self.cache.misses,
        )  # fmt: skip
