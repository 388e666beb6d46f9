"""Experiments without a server: assignment (stable, near its share, monotone in a ramp),
the intervals against published values, the guardrail, and a real engine holding two bundles
whose broken candidate the guardrail stops."""

from __future__ import annotations

import asyncio

import pytest

from service.engine.experiments import (
    ExperimentPlan,
    Guardrail,
    arm_of,
    difference,
    read_plan,
    wilson,
)
from service.messages import Experiment, Recommend
from tests.support.bundles import two_versions

USERS = [f"user-{i}" for i in range(100_000)]


def plan(share: float, salt: str = "s1") -> ExperimentPlan:
    return ExperimentPlan("b2", share, salt, "2026-12-07T00:00:00Z")


@pytest.mark.parametrize("share", [0.05, 0.5, 0.9])
def test_shares_hold_within_one_percent_over_100k_users(share):
    on_candidate = sum(arm_of(u, plan(share)) == "candidate" for u in USERS)
    assert abs(on_candidate / len(USERS) - share) < 0.01


def test_assignment_is_stable_monotone_in_a_ramp_and_fresh_per_salt():
    small, large = plan(0.2), plan(0.6)
    first = [arm_of(u, small) for u in USERS[:5000]]
    assert first == [arm_of(u, plan(0.2)) for u in USERS[:5000]]  # same plan, same arms
    # A ramp keeps every candidate user on the candidate.
    assert all(
        arm_of(u, large) == "candidate"
        for u, a in zip(USERS, first, strict=False)
        if a == "candidate"
    )
    other = [arm_of(u, plan(0.2, "s2")) for u in USERS[:5000]]
    both = sum(a == b == "candidate" for a, b in zip(first, other, strict=True))
    assert 0.02 < both / 5000 < 0.06  # independent: about 0.2 x 0.2
    assert arm_of(None, small) == arm_of("", small) == "control"
    stopped = ExperimentPlan("b2", 1.0, "s1", "t", stopped="stopped by an operator")
    assert arm_of("user-1", stopped) == "control" and arm_of("user-1", plan(1.0)) == "candidate"


def test_intervals_match_newcombe_1998():
    """Newcombe (1998), Statistics in Medicine 17: Wilson 81/263 is 0.2553-0.3662; the
    difference 56/70 - 48/80 = 0.2000 has the hybrid score interval 0.0524-0.3339."""
    _, low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10)[:2] == (0.0, 0.0) and round(wilson(0, 10)[2], 4) == 0.2775
    diff, low, high = difference((48, 80), (56, 70))
    assert (round(diff, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    assert wilson(0, 0) is None and difference((1, 2), (0, 0)) is None


def test_the_guardrail_stops_on_errors_or_latency_only_after_enough_answers():
    rail = Guardrail(factor=2.0, min_answers=50)
    for _ in range(49):
        rail.observe("control", True, 5.0)
        rail.observe("candidate", False, 5.0)
    assert rail.verdict() is None  # 49 answers: too few to judge
    rail.observe("control", True, 5.0)
    assert "error rate" in rail.observe("candidate", False, 5.0)  # judged at each error
    assert "error rate" in rail.verdict()
    rail.reset()
    for _ in range(100):
        rail.observe("control", True, 5.0)
        rail.observe("candidate", True, 9.0)
    assert rail.verdict() is None  # slower, within 2x
    for _ in range(3):
        rail.observe("candidate", True, 50.0)
    assert "p99" in rail.verdict()
    rail.reset()
    for i in range(100):
        rail.observe("control", True, 5.0)
        rail.observe("candidate", i % 100 != 0, 5.0)  # 1% errors against a clean control
    assert rail.verdict() is None


def test_the_guardrail_stops_a_candidate_users_stopped_clicking():
    rail = Guardrail(factor=2.0, min_answers=50, min_impressions=1000)
    assert rail.observe_events("control", 999, 100) is None  # too few to judge
    assert rail.observe_events("candidate", 999, 40) is None
    assert rail.observe_events("candidate", 1, 0) is None  # control has 999 still
    # 10% against 4% on 1,000 each: below control's / 2, the interval below 0.
    verdict = rail.observe_events("control", 1, 0)
    assert verdict is not None and "CTR 4.00% fell below control's 10.00% / 2" in verdict
    rail.reset()
    rail.observe_events("control", 1000, 100)
    assert rail.observe_events("candidate", 1000, 60) is None  # lower, not by half
    rail.reset()
    rail.observe_events("control", 100_000, 1000)  # 1.0%
    assert rail.observe_events("candidate", 100, 0) is None  # 0 of 100: too few impressions


def test_an_engine_serves_two_arms_and_the_guardrail_stops_a_broken_candidate(
    tiny_bundle, tmp_path
):
    from service.engine.engine import Engine
    from service.metrics import Metrics
    from service.settings import Settings

    root, candidate = two_versions(tiny_bundle, tmp_path)
    settings = Settings(
        bundle=str(root),
        engine={"reload_interval_s": 0, "guardrail_min_answers": 20, "query_cache_size": 0},
    )

    async def scenario() -> None:
        engine = Engine(settings, Metrics())
        await engine.start()
        bundles = engine.bundles
        try:
            await engine.bundles.steer(Experiment(candidate=candidate, share=0.5))
            served = {}
            for i in range(60):
                r = await bundles.recommend(Recommend(user_id=f"u{i}", k=3))
                served[f"u{i}"] = (r.arm, r.bundle_id)
            expected = {u: arm_of(u, read_plan(root)) for u in served}
            assert {u: a for u, (a, _) in served.items()} == expected
            assert {b for a, b in served.values() if a == "candidate"} == {candidate}
            assert {b for a, b in served.values() if a == "control"} == {
                root.joinpath("current").resolve().name
            }
            # Break the candidate (its batches raise, as a bug would): the guardrail stops it.
            broken = bundles.candidate
            assert broken is not None

            def fail(_batch: list) -> list:
                raise RuntimeError("a broken candidate")

            broken.batcher.process = fail
            failures = 0
            for i in range(200):
                try:
                    await bundles.recommend(Recommend(user_id=f"v{i}", k=3))
                except RuntimeError:
                    failures += 1
                if bundles.candidate is None:
                    break
            # Both arms had their 20 answers: the failures that pass 2 x control's (floored)
            # error rate stop it, a handful at most.
            assert bundles.candidate is None and 1 <= failures <= 5, failures
            await asyncio.sleep(0.2)
            stopped = read_plan(root)
            assert stopped is not None and stopped.stopped.startswith("guardrail")
            after = [await bundles.recommend(Recommend(user_id=f"w{i}", k=3)) for i in range(20)]
            assert {r.arm for r in after} == {"control"}  # nothing from the stopped candidate
        finally:
            await engine.close()

    asyncio.run(scenario())
