"""The events benchmark, short, on the tiny bundle: the three settings served, the ratios
theirs, the records counted and measured."""

from __future__ import annotations

import json

import pytest

from bench.events_cost import main
from tests.support.redis import redis_or_skip
from tests.support.servers import free_port
from tests.support.tools import tool_or_skip


@pytest.mark.slow
def test_a_short_run_measures_both_sides(monkeypatch, tiny_bundle, tmp_path):
    import bench.common

    wrk = tool_or_skip("wrk", "apt-get install wrk")
    redis_or_skip(tmp_path)  # skips (or fails under CI) without redis-server
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    args = ["--bundle", str(tiny_bundle), "--seconds", "2", "--rounds", "1"]
    assert main([*args, "--port", str(free_port()), "--wrk", wrk]) == 0
    result = json.loads((tmp_path / "events_cost.json").read_text())
    rps = result["requests_per_s"]
    assert min(rps.values()) > 0 and set(rps) == {"off", "events", "attribution"}
    assert result["ratio"] == pytest.approx(rps["events"] / rps["off"])
    assert result["attribution_ratio"] == pytest.approx(rps["attribution"] / rps["events"])
    # Only the attribution run records answers: about one per request wrk counted (plus
    # the warm-up's and those still in flight when wrk stopped counting).
    served = result["runs"]["attribution"][0]["requests"]
    assert 0.9 * served < result["answer_records"] < 1.1 * served + 50
    assert 50 < result["redis_bytes_per_record"] < 2000
