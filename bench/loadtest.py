"""Headless load test of a running walrus service (``make loadtest``).

Runs ``bench/locustfile.py`` with locust for a bounded time, then prints requests/s,
p50/p95/p99 latency and failures per request kind, and writes them to
``bench/results/loadtest.json``. Only loopback or your own test hosts are valid targets.

    python -m bench.loadtest --host http://127.0.0.1:8000 --users 8 --run-time 30s
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def parse_stats(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            count = int(row["Request Count"])
            rows.append(
                {
                    "name": row["Name"] or "all",
                    "requests": count,
                    "failures": int(row["Failure Count"]),
                    "requests_per_s": float(row["Requests/s"]),
                    "p50_ms": float(row["50%"]) if count else None,
                    "p95_ms": float(row["95%"]) if count else None,
                    "p99_ms": float(row["99%"]) if count else None,
                    "mean_ms": float(row["Average Response Time"]) if count else None,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=8, help="concurrent simulated clients")
    parser.add_argument("--spawn-rate", type=float, default=4.0)
    parser.add_argument("--run-time", default="30s")
    parser.add_argument("--name", default="loadtest", help="results file name")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "stats"
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "--host",
            args.host,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            args.run_time,
            "--stop-timeout",
            "5",
            "--csv",
            str(prefix),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        stats_file = prefix.with_name("stats_stats.csv")
        if not stats_file.is_file():
            sys.stderr.write(run.stderr[-4000:])
            print(
                f"error: locust produced no statistics (exit {run.returncode}); is {args.host} up?"
            )
            return 2
        rows = parse_stats(stats_file)
    print_table(
        f"walrus load test: {args.users} users, {args.run_time} against {args.host}",
        rows,
        ["name", "requests", "failures", "requests_per_s", "p50_ms", "p95_ms", "p99_ms"],
    )
    path = write_results(
        args.name,
        {"host": args.host, "users": args.users, "run_time": args.run_time, "rows": rows},
    )
    print(f"wrote {path}")
    total = next((r for r in rows if r["name"] == "Aggregated"), rows[-1])
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
