"""The soak run (``make soak``): a benchmark, not a test. walrus as ``make demo`` starts it,
with a real redis-server for users' events, 10 minutes at 80% of its measured capacity with
the realistic mix; beside it, events for a tenth as many interactions (``POST /v1/events``,
batches of 10, for users of the bundle and new ones), and every 2 minutes a catalog update
(``walrus bundle update``: 20 items added, 20 withdrawn) hot-reloaded
(``POST /admin/reload``). Reported per minute: requests/s, p50/p99, failures, resident
memory, events stored; the verdict: zero failed requests (recommendations and events) and
memory growth under 5% from minute 2 to the last.

    python -m bench.soak --bundle artifacts/demo/bundles --minutes 10
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import write_results
from bench.serve import MIX, mix_bodies, resident_bytes, run_bodies, running, walrus_cmd
from bench.wrk import BODIES_FROM_FILE, run_wrk, write_bodies
from export.format import MANIFEST, resolve_bundle, switch_current, writable_copy
from tests.support.redis import RedisServer

TOKEN = "soak-token-at-least-32-characters-long"
CONNECTIONS = 16
EVENTS_SHARE = 0.1  # events per recommendation
EVENTS_BATCH = 10
CATALOG_CHANGE = 20  # items added and withdrawn per catalog update

PACED = BODIES_FROM_FILE.replace(
    "request = function()",
    "delay = function() return DELAY_MS end\nrequest = function()",
)
"""The bodies script, each connection pausing between requests: the offered load."""


def new_version(source: Path, bundles: Path, name: str) -> None:
    """A copy of ``source`` as bundle ``name``, then ``current`` moved to it."""
    writable_copy(source, bundles / name)
    manifest = json.loads((bundles / name / MANIFEST).read_text())
    manifest["bundle_id"] = name
    (bundles / name / MANIFEST).write_text(json.dumps(manifest))
    switch_current(bundles, name)


@dataclass
class Soak:
    """One soak run's server and what it records: a minute of paced load at a time, a
    reload now and then."""

    wrk: str
    url: str
    source: Path
    bundles: Path
    events_per_s: float = 0.0
    reloads: list[dict[str, Any]] = field(default_factory=list)
    minutes: list[dict[str, Any]] = field(default_factory=list)
    withdrawn: set[str] = field(default_factory=set)

    def reload_at(self, minute: int) -> None:
        time.sleep(30)  # mid-minute, while the load runs
        add, remove = self.catalog_change(minute)
        walrus = str(Path(sys.executable).with_name("walrus"))
        subprocess.run(
            [walrus, "bundle", "update", "--bundles", str(self.bundles), "--add", str(add),
             "--remove", str(remove)],
            check=True, capture_output=True,
        )  # fmt: skip
        start = time.perf_counter()
        r = httpx.post(
            f"{self.url}/admin/reload", timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        seconds = time.perf_counter() - start
        self.reloads.append(
            {"minute": minute, "status": r.status_code, **r.json(), "seconds": seconds}
        )

    def catalog_change(self, minute: int) -> tuple[Path, Path]:
        """Files for one update: new items, and items to withdraw (none withdrawn twice)."""
        rng = np.random.default_rng(minute)
        ids = json.loads((resolve_bundle(self.bundles) / "item_ids.json").read_text())
        add = self.bundles.parent / f"add-{minute}.csv"
        with add.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item_id", "title"])
            writer.writerows([f"soak-{minute}-{i}", f"soak item {minute} {i}"] for i in range(20))
        left = [i for i in ids if i not in self.withdrawn and not i.startswith("soak-")]
        gone = [left[int(i)] for i in rng.choice(len(left), CATALOG_CHANGE, replace=False)]
        self.withdrawn.update(gone)
        remove = self.bundles.parent / f"remove-{minute}.txt"
        remove.write_text("\n".join(gone) + "\n")
        return add, remove

    def post_events(self, seconds: float, users: list[str], items: list[str]) -> dict[str, int]:
        """Batches of events at ``events_per_s`` for ``seconds``; counts by status."""
        rng = np.random.default_rng(len(self.minutes))
        counts: dict[str, int] = {}
        period = EVENTS_BATCH / self.events_per_s
        end = time.monotonic() + seconds
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while (now := time.monotonic()) < end:
                events = [
                    {"user_id": users[int(rng.integers(len(users)))] if rng.random() < 0.8
                     else f"soak-new-{int(rng.integers(1000))}",
                     "item_id": items[int(rng.integers(len(items)))]}
                    for _ in range(EVENTS_BATCH)
                ]  # fmt: skip
                try:
                    status = str(client.post("/v1/events", json={"events": events}).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                counts[status] = counts.get(status, 0) + 1
                time.sleep(max(0.0, period - (time.monotonic() - now)))
        return counts

    def minute(self, minute: int, reload: bool, paced: Path, bodies: Path, pid: int) -> None:
        reloader = threading.Thread(target=self.reload_at, args=(minute,)) if reload else None
        if reloader is not None:
            reloader.start()
        path = resolve_bundle(self.bundles)
        users = json.loads((path / "user_ids.json").read_text())
        items = json.loads((path / "item_ids.json").read_text())
        events: dict[str, int] = {}
        poster = threading.Thread(target=lambda: events.update(self.post_events(60, users, items)))
        poster.start()
        run = run_wrk(self.wrk, self.url, "/v1/recommend", CONNECTIONS, 60, 2, paced, [str(bodies)])
        poster.join()
        if reloader is not None:
            reloader.join()
        run["minute"] = minute
        run["event_batches"] = events
        run["resident_bytes"] = resident_bytes(pid)
        self.minutes.append(run)
        print(
            f"minute {minute}: {run['requests_per_s']:.0f} requests/s, p99 "
            f"{run['p99_ms']:.1f} ms, errors {run['errors_status'] + run['errors_other']}, "
            f"resident {run['resident_bytes'] / 2**20:.0f} MiB, event batches {events}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/demo/bundles"))
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--reload-every", type=int, default=2, help="minutes")
    parser.add_argument("--load", type=float, default=0.8, help="share of measured capacity")
    parser.add_argument("--wrk", default=shutil.which("wrk"))
    args = parser.parse_args(argv)
    if args.wrk is None:
        print("error: wrk not found: install it (apt install wrk) or pass --wrk PATH")
        return 2
    out: dict[str, Any] = {"minutes": args.minutes, "load": args.load, "connections": CONNECTIONS}
    with tempfile.TemporaryDirectory(prefix="walrus-soak-") as tmp:
        soak = run_soak(args, Path(tmp), out)
    minutes = soak.minutes
    failures = sum(m["errors_status"] + m["errors_other"] + failed_events(m) for m in minutes)
    base = minutes[1]["resident_bytes"] if len(minutes) > 1 else minutes[0]["resident_bytes"]
    growth = minutes[-1]["resident_bytes"] / base - 1
    out.update(
        failures=failures,
        memory_growth=growth,
        reloaded=[r.get("bundle_id") for r in soak.reloads],
    )
    path = write_results("soak", out)
    print(report(out))
    print(f"wrote {path}")
    return 0 if failures == 0 and growth < 0.05 else 1


def failed_events(minute: dict[str, Any]) -> int:
    """Event batches not answered 202."""
    return sum(n for status, n in minute.get("event_batches", {}).items() if status != "202")


def run_soak(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> Soak:
    """Measure capacity, then load the server at ``args.load`` of it, minute by minute."""
    source, bundles = resolve_bundle(args.bundle), work / "bundles"
    bundles.mkdir()
    new_version(source, bundles, "soak-0")
    mix = mix_bodies(source, 20_000, MIX)
    bodies = write_bodies(work / "mix.jsonl", mix)
    cmd, env = walrus_cmd(bundles, 8740)
    redis = RedisServer(work).start()
    env.update(
        WALRUS_FRONT__ADMIN_TOKEN=TOKEN,
        WALRUS_ENGINE__RELOAD_INTERVAL_S="0",
        WALRUS_EVENTS__REDIS_URL=redis.url,
    )
    soak = Soak(args.wrk, "http://127.0.0.1:8740", source, bundles)
    try:
        return measured(args, work, out, soak, (cmd, env, mix, bodies))
    finally:
        redis.stop()


def measured(
    args: argparse.Namespace,
    work: Path,
    out: dict[str, Any],
    soak: Soak,
    serving: tuple[list[str], dict[str, str], list[dict[str, Any]], Path],
) -> Soak:
    cmd, env, mix, bodies = serving
    with running(cmd, env, soak.url, {"query": "warm up", "k": 10}) as info:
        capacity = run_bodies(args.wrk, soak.url, mix, 32, 15, work, "capacity")
        rate = args.load * capacity["requests_per_s"]
        soak.events_per_s = EVENTS_SHARE * rate
        # Each connection sends, waits for the answer, then pauses: pause = its share of
        # the period minus the time an answer takes at this load.
        delay_ms = max(0.0, CONNECTIONS / rate * 1000 - capacity["p50_ms"] / 4)
        paced = work / "paced.lua"
        paced.write_text(PACED.replace("DELAY_MS", f"{delay_ms:.2f}"))
        out.update(
            capacity=capacity,
            target_requests_per_s=rate,
            events_per_s=soak.events_per_s,
            delay_ms=delay_ms,
            start_s=info["start_s"],
        )
        for minute in range(1, args.minutes + 1):
            soak.minute(minute, minute % args.reload_every == 0, paced, bodies, info["pid"])
            out.update(per_minute=soak.minutes, reloads=soak.reloads)
            write_results("soak", out)
    return soak


def report(r: dict[str, Any]) -> str:
    lines = [
        f"Offered {r['target_requests_per_s']:.0f} requests/s ({r['load']:.0%} of the "
        f"{r['capacity']['requests_per_s']:.0f} measured), {r['connections']} connections, "
        f"the realistic mix, {r.get('events_per_s', 0):.0f} events/s beside it; catalog updates: "
        + ", ".join(
            f"minute {x['minute']} -> {x.get('bundle_id')} ({x['seconds']:.1f} s)"
            for x in r["reloads"]
        )
        + ".",
        "",
        "| minute | requests/s | p50 ms | p99 ms | failures | event batches (202) | resident MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in r["per_minute"]:
        lines.append(
            f"| {m['minute']} | {m['requests_per_s']:.0f} | {m['p50_ms']:.1f} | "
            f"{m['p99_ms']:.1f} | {m['errors_status'] + m['errors_other'] + failed_events(m)} "
            f"| {m.get('event_batches', {}).get('202', 0)} "
            f"| {m['resident_bytes'] / 2**20:.0f} |"
        )
    if "failures" in r:
        lines += [
            "",
            f"Failures: {r['failures']}; resident memory growth from minute 2 to "
            f"the last: {r['memory_growth']:+.1%}.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
