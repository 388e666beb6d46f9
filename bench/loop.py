"""The learning loop, end to end, in a simulated world (``make bench-loop``).

Simulated users are the synthetic generator's own (``generate_world``): each has a hidden
topic mixture. Shown an answer, a user examines place p with probability p ** -0.7 and
clicks an examined item with probability 0.6 x their share of its topic: every click
probability is known, so every answer has an expected CTR.

1. Bundle A, trained on an early 30% of each user's history, serves (``walrus serve``: an
   engine and two fronts, a real redis-server).
2. Users ask, read and click; each answer's impressions and clicks are posted with its
   ``recommendation_id`` and places.
3. ``walrus retrain`` makes B from those events; it passes the gate and starts an
   experiment at half the users.
4. Both arms serve; midway the engine is restarted (SIGTERM: the supervisor starts it again).
   Each arm's online CTR (``GET /v1/experiments``) is reported with its interval, beside the
   simulator's own counts (which attribution must equal exactly) and expected CTR.
5. A retrain from shuffled data (a bug upstream: items no longer match users; the newest
   quarter of events, the gate's judge, as it was; serving judged folding in the real
   events in Redis) must be refused by the gate; its candidate, forced past the gate with
   ``POST /admin/experiment``, must be stopped by the guardrail.

    python -m bench.loop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench.common import REPO, Benchmark
from bench.serve import running, walrus_cmd
from models.data.synthetic import SIZES, Tastes, generate_world
from service.engine.experiments import difference, wilson
from tests.support.redis import RedisServer
from walrus.retraining import place

DRIVES = place.__module__  # the kept result's fingerprint: what the loop runs
TOKEN = "loop-" + "x" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EARLY = 0.3
K = 10
EXAMINE = 0.7  # examination probability at place p: p ** -EXAMINE
ATTRACT = 0.6  # click probability of an examined item: ATTRACT x the user's topic share


@dataclass
class Tally:
    """The simulator's own counts per arm: what attribution must reproduce exactly."""

    answers: dict[str, int] = field(default_factory=dict)
    impressions: dict[str, int] = field(default_factory=dict)
    clicks: dict[str, int] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)  # sum of click probabilities

    def add(self, arm: str, shown: int, clicked: int, expected: float) -> None:
        for counts, n in ((self.answers, 1), (self.impressions, shown), (self.clicks, clicked)):
            counts[arm] = counts.get(arm, 0) + n
        self.expected[arm] = self.expected.get(arm, 0.0) + expected


class World:
    """The simulated users: who they are, what they click."""

    def __init__(self, tastes: Tastes, users: list[str], seed: int) -> None:
        self.tastes, self.users = tastes, users
        self.rng = np.random.default_rng(seed)
        self.examine = np.arange(1, K + 1, dtype=np.float64) ** -EXAMINE

    def probabilities(self, user: str, items: list[str]) -> np.ndarray:
        u = int(user[1:])
        topics = self.tastes.item_topic[[int(i[1:]) for i in items]]
        return self.examine[: len(items)] * ATTRACT * self.tastes.affinity[u, topics]

    def organic(self, user: str) -> dict[str, Any]:
        """An item the user finds of their own accord: a topic by their mixture, an item of
        it by popularity."""
        u = int(user[1:])
        topic = self.rng.choice(len(self.tastes.affinity[u]), p=self.tastes.affinity[u])
        members = np.flatnonzero(self.tastes.item_topic == topic)
        weights = self.tastes.popularity[members]
        item = int(self.rng.choice(members, p=weights / weights.sum()))
        return {"user_id": user, "item_id": f"i{item}", "type": "click"}

    def read(self, user: str, answer: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        """The events a user sends for one answer, and its expected number of clicks."""
        items = [i["item_id"] for i in answer["items"]]
        p = self.probabilities(user, items)
        clicked = self.rng.random(len(items)) < p
        rec = answer["recommendation_id"]
        events = [
            {"user_id": user, "item_id": item, "type": kind, "recommendation_id": rec,
             "position": place}
            for place, (item, hit) in enumerate(zip(items, clicked, strict=True), 1)
            for kind in (("impression", "click") if hit else ("impression",))
        ]  # fmt: skip
        return events, float(p.sum())


def walrus(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "walrus.cli", *args],
        check=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def build(work: Path, seed: int) -> tuple[Path, Tastes, list[str]]:
    """The world's data, bundle A trained on the early part, the config retraining uses."""
    interactions, catalog, tastes = generate_world(SIZES["small"], seed)
    data = work / "data"
    data.mkdir(parents=True)
    shuffled = interactions.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("user_id").cumcount() / shuffled.groupby("user_id")[
        "item_id"
    ].transform("size")
    shuffled[rank < EARLY].to_csv(data / "interactions.csv", index=False)
    catalog.to_csv(data / "catalog.csv", index=False)
    text = (REPO / "configs" / "demo.toml").read_text()
    text = text.replace('"artifacts/data/synthetic-small', f'"{data}').replace(
        'output_dir = "artifacts/demo"', f'output_dir = "{work / "artifacts"}"'
    )
    text += "\n[retrain]\nholdout_fraction = 0.2\nk = 10\nshare = 0.5\n"
    config = work / "loop.toml"
    config.write_text(text)
    walrus("train", "hybrid", "-c", str(config))
    walrus("export", "-c", str(config))
    return config, tastes, sorted(interactions["user_id"].unique())


def play(client: httpx.Client, world: World, users: list[str], tally: Tally) -> None:
    """One round: every user asks once and reads, and finds one item of their own accord;
    the events are posted in batches."""
    pending: list[dict[str, Any]] = []
    for user in users:
        answer = ask(client, user)
        events, expected = world.read(user, answer)
        clicks = sum(e["type"] == "click" for e in events)
        tally.add(answer["arm"], len(answer["items"]), clicks, expected)
        pending += [*events, world.organic(user)]
        if len(pending) >= 500:
            post(client, pending)
            pending = []
    if pending:
        post(client, pending)


def ask(client: httpx.Client, user: str) -> dict[str, Any]:
    for _ in range(600):  # an engine restarting answers 503 for a moment
        r = client.post("/v1/recommend", json={"user_id": user, "k": K})
        if r.status_code == 200:
            answer: dict[str, Any] = r.json()
            return answer
        time.sleep(0.05)
    raise RuntimeError(f"no answer for {user}: {r.status_code} {r.text}")


def post(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    for _ in range(600):
        r = client.post("/v1/events", json={"events": events})
        if r.status_code == 202:
            if r.json()["accepted"] != len(events):
                raise RuntimeError(f"events rejected: {r.text[:500]}")
            return
        time.sleep(0.05)
    raise RuntimeError(f"events not taken: {r.status_code} {r.text}")


def report(client: httpx.Client) -> dict[str, Any]:
    got: dict[str, Any] = client.get("/v1/experiments", headers=ADMIN).json()
    return got


def online(before: dict[str, Any], after: dict[str, Any], arm: str) -> dict[str, int]:
    """An arm's counts between two reports (the same bundle in both)."""
    a, b = before["arms"][arm], after["arms"][arm]
    same = a["bundle_id"] == b["bundle_id"]
    counts = {"answers": b["answers"] - (a["answers"] if same else 0)}
    for kind in ("impression", "click"):
        counts[kind] = b["events"].get(kind, 0) - (a["events"].get(kind, 0) if same else 0)
    return counts


def restart_engine(serve_pid: int) -> None:
    """SIGTERM the engine (the supervisor's child running service.engine): it finishes and
    writes what it holds; the supervisor starts a new one."""
    found = subprocess.run(
        ["pgrep", "-P", str(serve_pid), "-f", "service.engine"], capture_output=True, text=True
    )
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGTERM)


def arms_summary(tally: Tally, counted: dict[str, dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ("control", "candidate"):
        n, clicks = tally.impressions.get(arm, 0), tally.clicks.get(arm, 0)
        ctr = wilson(counted[arm]["click"], counted[arm]["impression"])
        out[arm] = {
            "simulated": {"answers": tally.answers.get(arm, 0), "impression": n, "click": clicks},
            "online": counted[arm],
            "exact": counted[arm]
            == {"answers": tally.answers.get(arm, 0), "impression": n, "click": clicks},
            "online_ctr": ctr,
            "expected_ctr": tally.expected.get(arm, 0.0) / n if n else None,
        }
        expected = out[arm]["expected_ctr"]
        out[arm]["expected_within_interval"] = bool(
            ctr is not None and expected is not None and ctr[1] <= expected <= ctr[2]
        )
    control, candidate = out["control"]["online"], out["candidate"]["online"]
    out["difference"] = difference(
        (control["click"], control["impression"]), (candidate["click"], candidate["impression"])
    )
    return out


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config, tastes, users = build(work, args.seed)
    bundles = work / "artifacts" / "bundles"
    world = World(tastes, users, args.seed)
    sample = users[: args.users]
    out: dict[str, Any] = {"users": len(sample), "k": K}
    with RedisServer(work).start() as redis_server:
        env = {
            "WALRUS_EVENTS__REDIS_URL": redis_server.url,
            "WALRUS_FRONT__ADMIN_TOKEN": TOKEN,
            "WALRUS_FRONT__WORKERS": "2",
            "WALRUS_ENGINE__RELOAD_INTERVAL_S": "1",
        }
        cmd, serve_env = walrus_cmd(bundles, args.port, **env)
        url = f"http://127.0.0.1:{args.port}"
        with (
            running(cmd, serve_env, url, None) as info,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            a = Tally()
            for _ in range(args.rounds):
                play(client, world, sample, a)
            out["a_alone"] = {"clicks": a.clicks, "impressions": a.impressions}
            walrus("retrain", "-c", str(config), env={"WALRUS_EVENTS__REDIS_URL": redis_server.url})
            retrained = json.loads((work / "artifacts" / "retrain" / "latest.json").read_text())
            out["retrain"] = {k: retrained[k] for k in ("decision", "action", "seconds", "events")}
            wait_for(lambda: report(client)["running"], "the experiment to start")
            before, b = report(client), Tally()
            for i in range(args.rounds * 2):
                if i == args.rounds:
                    restart_engine(info["pid"])
                play(client, world, sample, b)
            after = report(client)
            counted = {arm: online(before, after, arm) for arm in ("control", "candidate")}
            out["experiment"] = arms_summary(b, counted)
            out["experiment"]["bundles"] = {
                a: after["arms"][a]["bundle_id"] for a in ("control", "candidate")
            }
            out["shares"] = {arm: n / sum(b.answers.values()) for arm, n in b.answers.items()}
            print(json.dumps(out, indent=1, default=str), flush=True)  # before the sabotage
            out["sabotage"] = sabotage(client, config, work, redis_server.url, world, sample)
    return out


def sabotaged_retrain(
    config: Path, work: Path, events: Path, redis_url: str
) -> tuple[dict[str, Any], Path]:
    """``walrus retrain`` from data a bug upstream shuffled (items no longer match users):
    its interactions, and its events but for the newest quarter, which holds the held-out
    slice the gate judges on. Serving is judged as it serves: folding in the real events in
    Redis. Its report and its candidate."""
    rng = np.random.default_rng(1)
    base = pd.read_csv(work / "data" / "interactions.csv", dtype=str)
    base["item_id"] = rng.permutation(base["item_id"].to_numpy())
    base.to_csv(work / "data" / "shuffled.csv", index=False)
    frame = pd.read_csv(events, dtype={"user_id": str, "item_id": str})
    older = frame["timestamp"] <= np.quantile(frame["timestamp"], 0.75)
    frame.loc[older, "item_id"] = rng.permutation(frame.loc[older, "item_id"].to_numpy())
    frame.to_csv(work / "shuffled-events.csv", index=False)
    bad = work / "shuffled.toml"
    bad.write_text(
        config.read_text()
        .replace(str(work / "data" / "interactions.csv"), str(work / "data" / "shuffled.csv"))
        .replace(f'output_dir = "{work / "artifacts"}"', f'output_dir = "{work / "shuffled"}"')
    )
    scratch = work / "shuffled-published"
    scratch.mkdir()
    walrus("retrain", "-c", str(bad), "--events", str(work / "shuffled-events.csv"),
           "--since", "0", "--serving", str(work / "artifacts" / "bundles"),
           "--publish-to", str(scratch), env={"WALRUS_EVENTS__REDIS_URL": redis_url})  # fmt: skip
    verdict = json.loads((work / "shuffled" / "retrain" / "latest.json").read_text())
    candidate = next((work / "shuffled" / "retrain").glob("*/bundles/*/manifest.json")).parent
    return verdict, candidate


def sabotage(
    client: httpx.Client, config: Path, work: Path, redis_url: str, world: World, users: list[str]
) -> dict[str, Any]:
    """A candidate trained on shuffled data must be refused by the gate; forced past the
    gate, it must be stopped by the guardrail."""
    stop = client.post("/admin/experiment", json={"action": "stop"}, headers=ADMIN)
    if stop.status_code != 200:
        raise RuntimeError(f"the experiment did not stop: {stop.text}")
    events = work / "events.csv"
    walrus("data", "events", "--redis-url", redis_url, "--out", str(events))
    verdict, broken = sabotaged_retrain(config, work, events, redis_url)
    out: dict[str, Any] = {
        "gate": verdict["decision"],
        "judged_on": verdict["judged_on"],
        "refused": not verdict["decision"]["published"],
    }
    place(broken, work / "artifacts" / "bundles")  # forced past the gate, started by hand
    started = client.post(
        "/admin/experiment", json={"candidate": broken.name, "share": 0.5}, headers=ADMIN
    )
    out["forced_start"] = started.status_code
    tally, rounds = Tally(), 0
    while report(client)["running"] and rounds < 20:
        play(client, world, users, tally)
        rounds += 1
    out["stopped"] = report(client)["stopped"]
    out["candidate_answers_before_stop"] = tally.answers.get("candidate", 0)
    out["candidate_ctr_before_stop"] = (
        tally.clicks.get("candidate", 0) / tally.impressions["candidate"]
        if tally.impressions.get("candidate")
        else None
    )
    out["rounds"] = rounds
    return out


def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def table(r: dict[str, Any]) -> str:
    """The docs table (docs/benchmarks.md prints this, tested against the kept run)."""
    e = r["experiment"]
    rows = [
        "| arm | bundle | answers | impressions | clicks | online CTR (95%) | expected CTR "
        "| counts exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ("control", "candidate"):
        a = e[arm]
        ctr = a["online_ctr"]
        rows.append(
            f"| {arm} ({'A' if arm == 'control' else 'B'}) | {e['bundles'][arm]} "
            f"| {a['online']['answers']} | {a['online']['impression']} | {a['online']['click']} "
            f"| {ctr[0]:.4f} ({ctr[1]:.4f}-{ctr[2]:.4f}) | {a['expected_ctr']:.4f} "
            f"| {'yes' if a['exact'] else 'NO'} |"
        )
    d = e["difference"]
    s = r["sabotage"]
    rows += [
        f"| B - A | | | | | {d[0]:+.4f} ({d[1]:+.4f} to {d[2]:+.4f}) | | |",
        f"| retrain from shuffled data | gate: {'refused' if s['refused'] else 'PUBLISHED'}"
        " | | | | | | |",
        f"| it, forced past the gate | guardrail: {s['stopped'] or 'NOT STOPPED'} "
        f"| {s['candidate_answers_before_stop']} answers before the stop | | | | | |",
    ]
    return "\n".join(rows)


def passed(r: dict[str, Any]) -> bool:
    e, s = r["experiment"], r["sabotage"]
    return bool(
        e["control"]["exact"]
        and e["candidate"]["exact"]
        and e["difference"][1] > 0
        and s["refused"]
        and s["stopped"]
    )


def arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=8790)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="walrus-loop-") as tmp:
        return measure(args, Path(tmp))


BENCHMARK = Benchmark("loop", __doc__ or "", arguments, run, table, passed)
main = BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
