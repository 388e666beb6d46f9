"""The docs' tables, printed from kept results (``make results`` writes them; a test checks
them). Each table sits between two markers naming its kept result::

    <!-- kept: docs/results/api/api.json -->
    ...printed here...
    <!-- /kept -->

What is printed there: the benchmark's own ``table`` of the kept JSON, after a line saying
the result went stale when a source file it measured has changed since (``bench.common.
stale``), in the words ``bench.common.stale_note`` prints. Nothing between markers is typed.

Run: ``python -m bench.results`` (print what differs), ``--write`` (rewrite the docs), or
``--run [NAME ...]`` (``make results``: run the benchmarks that fit this machine, keep their
results in docs/results, then rewrite the docs).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import api, events_cost, filters, loop, retrain, signals, update
from bench.common import REPO, RESULTS, Benchmark, stale, stale_note

Table = Callable[[dict[str, Any]], str]
TABLES: dict[str, Table] = {
    "docs/results/api/api.json": api.table,
    "docs/results/filters-2cpu/filters.json": filters.table,
    "docs/results/update-2cpu/update.json": update.table,
    "docs/results/events-2cpu/events_cost.json": events_cost.table,
    "docs/results/signals/signals.json": signals.report,
    "docs/results/retrain-2cpu/retrain.json": retrain.table,
    "docs/results/loop/loop.json": loop.table,
}
"""Each kept result printed by a table function, by its path in the repository."""
COMPARED_SCHEMAS = "1ec135e"
"""The commit whose pydantic schemas ``bench.api`` measures against (the API's last
definition in pydantic)."""


def api_arguments(work: Path) -> list[str]:
    old = work / "schemas.py"
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{COMPARED_SCHEMAS}:service/schemas.py"],
        capture_output=True,
        text=True,
        check=True,
    )
    old.write_text(shown.stdout)
    return ["--pydantic-schemas", str(old)]


RUNS: dict[str, tuple[Benchmark, str, Callable[[Path], list[str]]]] = {
    "api": (api.BENCHMARK, "docs/results/api/api.json", api_arguments),
    "filters": (filters.BENCHMARK, "docs/results/filters-2cpu/filters.json", lambda _w: []),
    "update": (update.BENCHMARK, "docs/results/update-2cpu/update.json", lambda _w: []),
    "events": (
        events_cost.BENCHMARK,
        "docs/results/events-2cpu/events_cost.json",
        lambda _w: ["--bundle", str(REPO / "artifacts/demo/bundles")],
    ),
    "retrain": (retrain.BENCHMARK, "docs/results/retrain-2cpu/retrain.json", lambda _w: []),
    "loop": (loop.BENCHMARK, "docs/results/loop/loop.json", lambda _w: []),
}
"""What ``make results`` runs, in order: each benchmark, where its result is kept, and the
arguments it needs (the rest are its defaults, which are the docs' settings)."""
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REGION = re.compile(r"(<!-- kept: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /kept -->)", re.S)
NO_RECORD = "measured before kept results recorded what they measured"


def printed(path: str) -> str:
    """What the docs print for the kept result at ``path``: its table, after the line that
    says it went stale, when it did."""
    kept = json.loads((REPO / path).read_text())
    if "provenance" not in kept:
        note = f"*{NO_RECORD}.*\n\n"
    elif stale(kept):
        note = f"*{stale_note(kept)}: {', '.join(stale(kept))}.*\n\n"
    else:
        note = ""
    return note + TABLES[path](kept) + "\n"


def rendered(text: str) -> str:
    def region(match: re.Match[str]) -> str:
        path = match["path"]
        if path not in TABLES:
            raise SystemExit(f"error: no table function for {path} (bench/results.py)")
        return match[1] + printed(path) + match[4]

    return REGION.sub(region, text)


def regions(page: Path) -> list[str]:
    return [m["path"] for m in REGION.finditer(page.read_text())]


def run(names: list[str]) -> None:
    """Run each benchmark and keep its result (and its plot) where the docs read it. Each in
    a process of its own: its result's provenance then lists what it imported, not what the
    benchmarks run before it did."""
    for name in names:
        benchmark, kept, arguments = RUNS[name]
        module = benchmark.run.__module__
        with tempfile.TemporaryDirectory(prefix=f"walrus-results-{name}-") as work:
            print(f"--- {name}")
            command = [sys.executable, "-m", module, *arguments(Path(work))]
            status = subprocess.run(command, cwd=REPO, check=False).returncode
        if status not in (0, 1):  # 1: ran, and missed a target the docs then show
            raise SystemExit(f"error: {name} did not run (exit {status})")
        target = REPO / kept
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RESULTS / f"{benchmark.name}.json", target)
        plot = RESULTS / f"{benchmark.name}.png"
        if plot.is_file():
            shutil.copyfile(plot, target.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the docs' tables")
    parser.add_argument(
        "--run", nargs="*", choices=list(RUNS), help="run these benchmarks first (none: all)"
    )
    args = parser.parse_args(argv)
    if args.run is not None:
        run(args.run or list(RUNS))
        args.write = True
    differ = []
    for page in PAGES:
        text = page.read_text()
        new = rendered(text)
        if new != text:
            differ.append(page.relative_to(REPO))
            if args.write:
                page.write_text(new)
    for page in differ:
        print(f"{'rewrote' if args.write else 'differs'}: {page}")
    return 0 if args.write or not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
