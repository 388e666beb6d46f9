"""Helpers shared by the benchmarks: result files and printed tables."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("models", "export", "service", "walrus")
"""The packages whose code a kept result measures (bench itself is the harness)."""


def machine() -> dict[str, Any]:

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 0) -> float:
    """Median milliseconds of ``fn`` over ``repeat`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """What a result measured: the commit it ran on, and a digest of each product source
    file the benchmark had imported by the time it wrote the result. A later change to any
    of them makes the result stale (``stale``), which tests/test_results.py holds the docs
    to."""
    files = sorted(
        {
            Path(module.__file__).resolve()
            for name, module in list(sys.modules.items())
            if name.split(".")[0] in PRODUCT and getattr(module, "__file__", None)
        }
    )
    sources = {str(f.relative_to(REPO)): digest(f) for f in files if f.is_relative_to(REPO)}
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", *sources], capture_output=True, text=True
    )
    commit = head.stdout.strip() or "unknown"
    # Uncommitted edits to what it measured: the digests, not the commit, say what ran.
    return {"commit": commit + ("+edits" if changed.stdout.strip() else ""), "sources": sources}


def stale(result: dict[str, Any]) -> list[str]:
    """The source files a kept result measured that have changed since (or are gone)."""
    sources: dict[str, str] = result.get("provenance", {}).get("sources", {})
    return [
        name
        for name, kept in sources.items()
        if not (REPO / name).is_file() or digest(REPO / name) != kept
    ]


def stale_note(result: dict[str, Any]) -> str:
    """What the docs print beside a figure whose code changed since it was measured."""
    return f"measured at commit {result['provenance']['commit']}, code changed since"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "provenance": provenance(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(
            col, justify="left" if col in ("dataset", "model", "stage", "name") else "right"
        )
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    Console(width=160).print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's command line, the same for each: its own arguments and ``--report``
    (print the docs' table of a kept JSON and stop); otherwise run, keep the result
    (``write_results``, with its provenance), draw its plot, print its table. The exit
    status says whether the result met its targets (``passed``)."""

    name: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    table: Callable[[dict[str, Any]], str]
    passed: Callable[[dict[str, Any]], bool] = lambda _result: True
    plot: Callable[[dict[str, Any], Path], None] | None = None

    def main(self, argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(description=self.description.split("\n")[0])
        self.arguments(parser)
        parser.add_argument("--report", type=Path, help="only print the table of a JSON result")
        args = parser.parse_args(argv)
        if args.report:
            print(self.table(json.loads(args.report.read_text())))
            return 0
        result = self.run(args)
        path = write_results(self.name, result)
        if self.plot is not None:
            self.plot(result, RESULTS / f"{self.name}.png")
        print(self.table(result))
        print(f"wrote {path}")
        return 0 if self.passed(result) else 1
