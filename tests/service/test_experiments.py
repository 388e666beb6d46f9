"""Experiments through `walrus serve` (an engine, two fronts) and a real redis-server: the
admin API, arms stable across fronts and a restart, attribution counted exactly per arm, and
every bad request a 4xx naming its field."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from export.format import resolve_bundle
from service.engine.experiments import arm_of, read_plan
from tests.support.bundles import two_versions
from tests.support.redis import redis_or_skip
from tests.support.servers import Server, eventually

pytestmark = pytest.mark.slow
TOKEN = "t" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def setup(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiments")
    root, candidate = two_versions(tiny_bundle, folder)
    with redis_or_skip(folder).start() as redis_server:
        server = Server(
            root,
            cli=True,
            log_dir=folder,
            WALRUS_FRONT__WORKERS="2",
            WALRUS_FRONT__ADMIN_TOKEN=TOKEN,
            WALRUS_EVENTS__REDIS_URL=redis_server.url,
            WALRUS_ENGINE__RELOAD_INTERVAL_S="0.2",
        )
        with server as srv:
            srv.wait()
            with httpx.Client(base_url=srv.url, timeout=60) as client:
                yield client, root, candidate, tiny_bundle.name, srv


def steer(client, **body):
    return client.post("/admin/experiment", json=body, headers=ADMIN)


def answer(client, user):
    r = client.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert r.status_code == 200, r.text
    return r.json()


def test_bad_experiment_requests_are_4xx_naming_the_field(setup):
    client, _root, candidate, control, _srv = setup
    for body, status, field in (
        ({"candidate": candidate, "share": 0}, 422, "share"),
        ({"candidate": candidate, "share": 1.5}, 422, "share"),
        ({"share": 0.5}, 422, "candidate"),
        ({"candidate": "no-such-bundle"}, 422, "candidate"),
        ({"candidate": "../etc"}, 422, "candidate"),
        ({"candidate": control}, 422, "candidate"),  # it serves already
        ({"action": "ramp"}, 422, "share"),
        ({"action": "sideways"}, 422, "action"),
        ({"candidate": candidate, "colour": "red"}, 422, "colour"),
    ):
        r = steer(client, **body)
        assert r.status_code == status and field in str(r.json()["detail"]), (body, r.text)
    assert steer(client, action="stop").status_code == 409  # nothing runs
    assert client.post("/admin/experiment", json={"action": "stop"}).status_code == 401
    assert client.get("/v1/experiments").status_code == 401


def test_an_experiment_splits_users_stably_and_counts_each_arm_exactly(setup):
    client, root, candidate, control, srv = setup
    r = steer(client, candidate=candidate, share=0.5)
    assert r.status_code == 200, r.text
    assert r.json()["running"] and r.json()["candidate"] == candidate
    plan = read_plan(root)
    users = [f"exp-user-{i}" for i in range(60)]
    arms = {}
    for user in users:
        first, again = answer(client, user), answer(client, user)  # either front
        assert first["arm"] == again["arm"] == arm_of(user, plan)
        assert first["bundle_id"] == (candidate if first["arm"] == "candidate" else control)
        arms[user] = first
    assert 15 <= sum(a["arm"] == "candidate" for a in arms.values()) <= 45
    # Every user sees their top 3 and clicks their first: counted per arm, none lost.
    events = []
    for user, a in arms.items():
        shown = [i["item_id"] for i in a["items"][:3]]
        rec = a["recommendation_id"]
        events += [
            {"user_id": user, "item_id": i, "type": "impression", "recommendation_id": rec}
            for i in shown
        ]
        events.append({"user_id": user, "item_id": shown[0], "type": "click",
                       "recommendation_id": rec})  # fmt: skip
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 202 and r.json()["attributed"] == len(events), r.text
    report = client.get("/v1/experiments", headers=ADMIN).json()
    for arm in ("control", "candidate"):
        n = sum(a["arm"] == arm for a in arms.values())
        got = report["arms"][arm]
        assert got["events"] == {"impression": 3 * n, "click": n}
        assert got["answers"] >= 2 * n  # each user asked twice (and the warm-up, for control)
        assert got["ctr"]["value"] == pytest.approx(1 / 3)
        assert got["ctr"]["low"] < 1 / 3 < got["ctr"]["high"]
    assert report["ctr_difference"]["value"] == pytest.approx(0.0, abs=1e-12)
    # The engine restarted (SIGTERM; the supervisor starts a new one): the same arms.
    engine = subprocess.run(
        ["pgrep", "-P", str(srv.process.pid), "-f", "service.engine"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(engine) == 1
    os.kill(int(engine[0]), signal.SIGTERM)
    eventually(
        lambda: (
            engine[0]
            not in subprocess.run(
                ["pgrep", "-f", "service.engine"], capture_output=True, text=True
            ).stdout.split()
        ),
        30,
    )
    eventually(lambda: client.get("/readyz").status_code == 200, 60, "the new engine is ready")
    eventually(lambda: client.get("/v1/experiments", headers=ADMIN).json()["running"], 30)
    assert {u: answer(client, u)["arm"] for u in users} == {u: a["arm"] for u, a in arms.items()}


def test_a_ramp_keeps_the_candidate_s_users_and_stop_and_promote_end_it(setup):
    client, root, candidate, _control, _srv = setup
    if not client.get("/v1/experiments", headers=ADMIN).json()["running"]:
        assert steer(client, candidate=candidate, share=0.5).status_code == 200
    users = [f"ramp-user-{i}" for i in range(40)]
    before = {u: answer(client, u)["arm"] for u in users}
    r = steer(client, action="ramp", share=1.0)
    assert r.status_code == 200 and r.json()["share"] == 1.0
    assert {answer(client, u)["arm"] for u in users} == {"candidate"}
    assert "candidate" in before.values()
    r = steer(client, action="stop")
    assert r.status_code == 200 and r.json()["stopped"] == "stopped by an operator"
    assert {answer(client, u)["arm"] for u in users} == {"control"}
    # Again, then promote: the candidate becomes current, for everyone, as control.
    assert steer(client, candidate=candidate, share=0.2).status_code == 200
    r = steer(client, action="promote")
    assert r.status_code == 200 and not r.json()["running"], r.text
    assert resolve_bundle(root).name == candidate and read_plan(root) is None
    after = {(a["arm"], a["bundle_id"]) for a in (answer(client, u) for u in users)}
    assert after == {("control", candidate)}
