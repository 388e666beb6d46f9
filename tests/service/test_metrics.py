"""/metrics is built at most once a second: a scraper asking often does not rebuild it (with
several processes a build re-reads every process's files)."""

from __future__ import annotations

from service.metrics import Metrics


def count(text: bytes) -> float:
    line = next(
        ln for ln in text.decode().splitlines() if ln.startswith("walrus_shed_requests_total")
    )
    return float(line.split()[-1])


def test_the_exposition_is_cached_for_its_age_then_rebuilt(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    metrics.shed.inc()
    assert count(metrics.exposition_cached(60.0)) == 1.0
    metrics.shed.inc()
    assert count(metrics.exposition_cached(60.0)) == 1.0  # within its age: the same build
    assert count(metrics.exposition_cached(0.0)) == 2.0  # past it: built again
