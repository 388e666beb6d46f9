"""What users' events and attribution cost the request path (``make bench-events``): the
service as ``make demo`` starts it, the realistic mix with wrk, side by side, alternating,
three rounds each, in three settings: no Redis (answers still carry their ids); events on,
with a real redis-server holding 20 recent events for every user of the mix (each user
request reads and folds them in), attribution off; and both on (every answer also recorded
in Redis). The ratios of the medians, and Redis's memory per answer record.

    python -m bench.events_cost --bundle artifacts/demo/bundles
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Benchmark
from bench.serve import MIX, mix_bodies, run_bodies, running, walrus_cmd
from export.format import resolve_bundle
from service.engine.events import EventStore, StoredEvent
from tests.support.redis import RedisServer

PER_USER = 20


def fill(url: str, bundle: Path, users: set[str]) -> None:
    """``PER_USER`` events of random items for each of ``users``."""
    items = json.loads((bundle / "item_ids.json").read_text())
    rng = np.random.default_rng(0)
    store = EventStore(url, 100, 3600, timeout_s=5, breaker_s=1)
    events = [
        StoredEvent(user, items[int(i)], 1.0, float(t))
        for user in sorted(users)
        for t, i in enumerate(rng.integers(len(items), size=PER_USER))
    ]
    for start in range(0, len(events), 10_000):
        store.append(events[start : start + 10_000])


SETTINGS = {
    "off": {},
    "events": {"WALRUS_EVENTS__ATTRIBUTION": "false"},
    "attribution": {},
}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bundle = resolve_bundle(args.bundle)
    mix = mix_bodies(bundle, 20_000, MIX)
    with RedisServer(work).start() as redis:
        fill(redis.url, bundle, {b["user_id"] for b in mix if "user_id" in b})
        client = redis.client()
        before = int(client.info("memory")["used_memory"])
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, extra in SETTINGS.items():
                if name != "off":
                    extra = {"WALRUS_EVENTS__REDIS_URL": redis.url, **extra}
                cmd, env = walrus_cmd(bundle, args.port, **extra)
                url = f"http://127.0.0.1:{args.port}"
                with running(cmd, env, url, {"query": "warm up", "k": 10}):
                    runs[name].append(run_bodies(args.wrk, url, mix, 32, args.seconds, work, name))
        records = sum(int(client.hlen(k)) for k in client.scan_iter(match="walrus:answers:*"))
        after = int(client.info("memory")["used_memory"])
    median = {n: statistics.median(r["requests_per_s"] for r in rs) for n, rs in runs.items()}
    p99 = {n: statistics.median(r["p99_ms"] for r in rs) for n, rs in runs.items()}
    return {
        "events_per_user": PER_USER,
        "connections": 32,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "requests_per_s": median,
        "p99_ms": p99,
        "ratio": median["events"] / median["off"],
        "attribution_ratio": median["attribution"] / median["events"],
        "answer_records": records,
        "redis_bytes_per_record": (after - before) / records if records else None,
        "runs": runs,
    }


def table(r: dict[str, Any]) -> str:
    """The docs table (docs/benchmarks.md prints this, tested against the kept run)."""
    rps, p99 = r["requests_per_s"], r["p99_ms"]
    return "\n".join(
        [
            "| Redis | requests/s | p99 ms | ratio |",
            "|---|---|---|---|",
            f"| off (answers carry their ids) | {rps['off']:.0f} | {p99['off']:.1f} | 1 |",
            f"| events, {r['events_per_user']} per user | {rps['events']:.0f} "
            f"| {p99['events']:.1f} | {r['ratio']:.2f} (to off) |",
            f"| events and attribution | {rps['attribution']:.0f} | {p99['attribution']:.1f} "
            f"| {r['attribution_ratio']:.2f} (to events) |",
            f"| Redis memory per answer record | {r['redis_bytes_per_record']:.0f} bytes "
            f"| ({r['answer_records']} records) | |",
        ]
    )


def arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--bundle", type=Path, default=Path("artifacts/demo/bundles"))
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=8750)
    ap.add_argument("--wrk", default=shutil.which("wrk"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.wrk is None:
        print("error: wrk not found: install it (apt install wrk) or pass --wrk PATH")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="walrus-events-") as tmp:
        return measure(args, Path(tmp))


BENCHMARK = Benchmark("events_cost", __doc__ or "", arguments, run, table)
main = BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
