"""The serving benchmark's parts: the request mix it sends, and one short real run against
the tiny bundle (wrk, a real ``walrus serve`` process) rendered as the docs' tables."""

from __future__ import annotations

import json
from collections import Counter

from bench.serve import MIX, main, mix_bodies, report
from tests.support.tools import tool_or_skip


def test_the_mix_follows_the_locust_weights_and_repeats_queries(tiny_bundle):
    bodies = mix_bodies(tiny_bundle, 4000, MIX)
    kinds = Counter(
        "+".join(k for k in ("user", "query") if f"{k}_id" in b or k in b) or "history"
        for b in bodies
    )
    for kind, weight in MIX.items():
        assert abs(kinds[kind] / len(bodies) - weight / 100) < 0.03, kinds
    queries = Counter(b["query"] for b in bodies if "query" in b)
    assert queries.most_common(1)[0][1] > 20  # Zipf: the head repeats
    assert all(len(b["history"]) == 5 for b in bodies if "history" in b)


def test_a_short_run_measures_walrus_and_renders(tiny_bundle, tmp_path, monkeypatch):
    import bench.common

    tool_or_skip("wrk", "apt-get install wrk")
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    assert (
        main(["--bundle", str(tiny_bundle), "--seconds", "1", "--skip", "peer", "seed", "roberta"])
        == 0
    )
    results = json.loads((tmp_path / "serve.json").read_text())
    curve = results["walrus"]["curve"]
    assert set(curve) == {"c1", "c8", "c32", "c64"}
    for run in curve.values():
        assert run["requests"] > 0 and run["errors_status"] == 0 and run["p99_ms"] > 0
    assert results["limit"]["best_queries_per_s"] >= results["limit"]["batch1_queries_per_s"]
    assert 0 <= results["walrus"]["mix"]["cache_hit_rate"] <= 1
    text = report(results)
    assert "walrus, all-distinct queries | 32 |" in text and "realistic mix" in text
    main(["--report", str(tmp_path / "serve.json"), "--plot", str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_the_docs_tables_are_the_kept_results():
    """docs/benchmarks.md shows what the kept run measured, not numbers typed in."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    results = json.loads((repo / "docs/results/serve-2cpu/serve.json").read_text())
    assert report(results) in (repo / "docs/benchmarks.md").read_text()


def test_the_docs_soak_table_is_the_kept_run():
    from pathlib import Path

    from bench.soak import report as soak_report

    repo = Path(__file__).resolve().parents[2]
    results = json.loads((repo / "docs/results/soak-2cpu/soak.json").read_text())
    assert results["failures"] == 0 and len(results["per_minute"]) == 10
    assert soak_report(results) in (repo / "docs/benchmarks.md").read_text()
