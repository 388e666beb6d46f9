"""The chaos run, short, on the tiny bundle: every fault is applied and seen, the load
gets no 5xx but 503-with-Retry-After, and the report says so."""

from __future__ import annotations

import pytest

from bench.chaos import main, outcome_of, verdict

pytestmark = pytest.mark.slow


def test_outcomes_are_told_apart():
    assert outcome_of(200, False) == "2xx" and outcome_of(503, True) == "503 with Retry-After"
    assert outcome_of(503, False) == "5xx (503)" and outcome_of(422, False) == "4xx"


def test_a_5xx_or_an_unseen_fault_fails_the_verdict():
    def phases(extra_load: dict, red: float, fault_answers: dict | None = None) -> dict:
        batches = {'500 {"detail":"internal error"}': 3} if fault_answers is None else fault_answers
        fault = {
            "slow clients": {"connections": 2, "answers": {"HTTP/1.1 408": 2}},
            "batch failures": {"fault_requests": batches, "failed_batches": 3},
            "engine killed": {"readyz_red_for_s": red},
            "tampered bundle": {"reload": {"reloaded": False}},
            "unsigned bundle": {"reload": {"reloaded": False, "reason": "x: unsigned"}},
        }
        return {k: {"load": {"2xx": 5, **extra_load}, "fault": v} for k, v in fault.items()}

    assert verdict(phases({}, 1.0))["passed"]
    assert not verdict(phases({"5xx (500)": 1}, 1.0))["passed"]
    assert not verdict(phases({}, 0.0))["passed"]
    assert not verdict(phases({}, 1.0, {"200 {...}": 3}))["passed"]  # the fault did not fire


def test_a_short_run_passes(tiny_bundle):
    assert main(["--bundle", str(tiny_bundle), "--phase-s", "3", "--clients", "2"]) == 0


def test_the_docs_table_is_the_kept_run():
    import json
    from pathlib import Path

    from bench.chaos import report

    repo = Path(__file__).resolve().parents[2]
    kept = json.loads((repo / "docs/results/chaos-2cpu/chaos.json").read_text())
    assert kept["verdict"]["passed"] and verdict(kept["phases"]) == kept["verdict"]
    assert report(kept) in (repo / "docs/benchmarks.md").read_text()
