"""The events benchmark, short, on the tiny bundle: both sides served, the ratio theirs."""

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
    on, off = result["requests_per_s"]["on"], result["requests_per_s"]["off"]
    assert on > 0 and off > 0 and result["ratio"] == pytest.approx(on / off)
