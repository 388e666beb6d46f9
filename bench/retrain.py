"""What ``walrus retrain`` costs, warm against cold (``make bench-retrain``): the demo's data
(synthetic ``small``, MiniLM) split as the loop would see it, a serving bundle trained on the
older part, the rest arriving as timestamped events; then ``walrus retrain`` twice on the same
events, warm-started and with ``--cold``, every step through the command line.

    python -m bench.retrain --size small
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import walrus.retraining
from bench.common import REPO, Benchmark

# Imported for the kept result's fingerprint: the code `walrus retrain` runs.
DRIVES = walrus.retraining.__name__

LATE = 0.4  # each user's newest 40% of interactions arrive as events


def walrus(*args: str) -> float:
    """Run a walrus command; its wall seconds (a failure stops the benchmark)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "walrus.cli", *args], check=True, cwd=REPO)
    return time.perf_counter() - start


def world(size: str, work: Path) -> tuple[Path, Path, float]:
    """(config, events file, seconds to train and export the serving bundle)."""
    data = work / "data"
    walrus("data", "synthetic", "--size", size, "--out", str(data))
    # In a random order: the file lists each user's items by index, and "the newest" must
    # not mean "the highest-numbered items" (those would be cold to the serving bundle).
    frame = pd.read_csv(data / "interactions.csv", dtype=str).sample(frac=1.0, random_state=0)
    rank = frame.groupby("user_id").cumcount() / frame.groupby("user_id")["item_id"].transform(
        "size"
    )
    late = rank >= 1 - LATE
    frame[~late].to_csv(data / "interactions.csv", index=False)
    events = frame[late].assign(weight=1.0)
    order = np.random.default_rng(0).permutation(len(events))
    events["timestamp"] = 1_700_000_000.0 + order * 1.0
    events.to_csv(work / "events.csv", index=False)
    text = (REPO / "configs" / "demo.toml").read_text()
    text = text.replace('"artifacts/data/synthetic-small', f'"{data}').replace(
        'output_dir = "artifacts/demo"', f'output_dir = "{work / "artifacts"}"'
    )
    config = work / "demo.toml"
    config.write_text(text)
    seconds = walrus("train", "hybrid", "-c", str(config))
    seconds += walrus("export", "-c", str(config))
    return config, work / "events.csv", seconds


def retrain(config: Path, events: Path, work: Path, cold: bool) -> dict[str, Any]:
    """One ``walrus retrain`` from the same start: its report, and its wall seconds."""
    (work / "artifacts" / "retrain" / "latest.json").unlink(missing_ok=True)
    target = work / ("published-cold" if cold else "published-warm")
    target.mkdir(exist_ok=True)
    args = ["retrain", "-c", str(config), "--events", str(events), "--publish-to", str(target)]
    seconds = walrus(*args, *(["--cold"] if cold else []))
    report: dict[str, Any] = json.loads(
        (work / "artifacts" / "retrain" / "latest.json").read_text()
    )
    report["wall_s"] = seconds
    return report


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config, events, serving_s = world(args.size, work)
    warm = retrain(config, events, work, cold=False)
    cold = retrain(config, events, work, cold=True)
    return {
        "size": args.size,
        "late_share": LATE,
        "serving_train_and_export_s": serving_s,
        "warm": warm,
        "cold": cold,
        "train_ratio": warm["seconds"]["train"] / cold["seconds"]["train"],
    }


def table(r: dict[str, Any]) -> str:
    """The docs table (docs/benchmarks.md prints this, tested against the kept run)."""
    k = next(m.split("@")[1] for m in r["warm"]["decision"]["candidate"] if "@" in m)
    rows = [
        f"| run | train s | whole run s | recall@{k} | ndcg@{k} | decision |",
        "|---|---|---|---|---|---|",
    ]
    serving = r["warm"]["decision"]["serving"]
    rows.append(
        f"| serving bundle (older data, events folded in) | "
        f"{r['serving_train_and_export_s']:.1f} (and export) | | {serving[f'recall@{k}']:.4f} "
        f"| {serving[f'ndcg@{k}']:.4f} | |"
    )
    for name in ("warm", "cold"):
        run = r[name]
        got = run["decision"]["candidate"]
        verdict = "published" if run["decision"]["published"] else "refused"
        rows.append(
            f"| retrain, {name} start | {run['seconds']['train']:.1f} | {run['wall_s']:.1f} "
            f"| {got[f'recall@{k}']:.4f} | {got[f'ndcg@{k}']:.4f} | {verdict} |"
        )
    rows.append(f"| train time, warm / cold | {r['train_ratio']:.2f} | | | | |")
    return "\n".join(rows)


def arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", default="small", choices=["tiny", "small", "medium"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="walrus-retrain-") as tmp:
        return measure(args, Path(tmp))


BENCHMARK = Benchmark("retrain", __doc__ or "", arguments, run, table)
main = BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
