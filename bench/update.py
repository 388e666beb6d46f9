"""A live catalog at the seed's item scale (``make bench-update``): `walrus bundle update`
adding 1,000 items and withdrawing 1,000 from a 500,000-item bundle (the seed's IVF indexes,
the offline all-MiniLM-L6-v2 encoder), run as a user runs it (the command line, timed from
start to exit), then:

1. the disk the new version costs: the bytes of its files that are not hard links to the
   previous version's, against the bytes of the files the update changed (goal: equal, so
   nothing unchanged was copied) and the bundle's whole size;
2. the checks the service runs before it serves the new version (``load_bundle``: every
   hash, every size), timed;
3. that no answer of the new version holds a withdrawn item and every added item is found
   by its own title;
4. a compaction of the result (``walrus bundle compact``), timed.

The bundle is built once (``walrus bundle synthetic``, 100,000 users: the users' files are
hard links in every version, so their number changes nothing here) and reused; each run
updates a hard-linked copy of it.

    python -m bench.update [--seed-bundles artifacts/seed-update/bundles]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench.common import Benchmark
from export.format import MANIFEST, resolve_bundle, switch_current
from export.runtime import LoadOptions, load_bundle
from export.synthetic import make_titles
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings

SEED = Path("artifacts/seed-update/bundles")
TARGET_S = 60.0


def walrus(*args: str) -> float:
    """Seconds the command took, start to exit; a failure stops the benchmark."""
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("walrus")), *args], check=True, capture_output=True
    )
    return time.perf_counter() - start


def linked_copy(seed: Path, work: Path) -> Path:
    """A bundles folder whose current is a hard-linked copy of the seed's current."""
    source = resolve_bundle(seed)
    target = work / source.name
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir():
            (target / rel).mkdir(parents=True, exist_ok=True)
        else:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target / rel)
    switch_current(work, source.name)
    return target


def change_files(bundle: Path, work: Path, n_add: int, n_remove: int) -> tuple[Path, Path]:
    """New items with new titles of the seed's vocabulary, and items to withdraw."""
    rng = np.random.default_rng(7)
    ids = json.loads((bundle / "item_ids.json").read_text())
    titles, _ = make_titles(rng, n_add)
    add = work / "add.csv"
    with add.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title"])
        writer.writerows([f"bench-new-{i}", f"{t} {i}"] for i, t in enumerate(titles))
    remove = work / "remove.txt"
    gone = rng.choice(len(ids), size=n_remove, replace=False)
    remove.write_text("\n".join(ids[int(i)] for i in gone) + "\n")
    return add, remove


def disk(new: Path, old: Path) -> dict[str, Any]:
    """Bytes of the new version: its own (not hard links to the old one's inodes), those of
    the files whose content changed, and all."""
    old_inodes = {p.stat().st_ino for p in old.rglob("*") if p.is_file()}
    old_hashes = json.loads((old / MANIFEST).read_text())["files"]
    files = json.loads((new / MANIFEST).read_text())["files"]
    own = sum(
        p.stat().st_size
        for p in new.rglob("*")
        if p.is_file() and p.stat().st_ino not in old_inodes
    )
    changed = {
        rel: entry["bytes"]
        for rel, entry in files.items()
        if old_hashes.get(rel, {}).get("sha256") != entry["sha256"]
    }
    manifest_bytes = (new / MANIFEST).stat().st_size
    return {
        "own_bytes": own,
        "changed_files_bytes": sum(changed.values()) + manifest_bytes,
        "changed_files": sorted(changed),
        "bundle_bytes": sum(entry["bytes"] for entry in files.values()) + manifest_bytes,
    }


def answers_check(bundle: Path, removed: set[str], titles: dict[str, str]) -> dict[str, Any]:
    """No withdrawn item in answers for sample users and queries; each of a sample of the
    added items found in the top 10 for its own title."""
    recommender = Recommender(bundle, Settings(bundle=bundle))
    rng = np.random.default_rng(3)
    users = [recommender.users.ids[int(i)] for i in rng.choice(len(recommender.users), 50)]
    asked = [Recommend(k=100, user_id=u) for u in users] + [Recommend(k=100)]
    sample = list(titles.items())[:50]
    asked += [Recommend(k=10, query=title) for _, title in sample]
    answers = [[i.item_id for i in recommender.recommend(r).items] for r in asked]
    found = sum(
        item in answer for (item, _), answer in zip(sample, answers[-len(sample) :], strict=True)
    )
    return {
        "answers_checked": len(answers),
        "withdrawn_in_answers": sum(len(removed & set(a)) for a in answers),
        "added_found_by_title": found / len(sample),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.seed_bundles / "current").exists():
        walrus("bundle", "synthetic", "--out", str(args.seed_bundles), "--users", "100000")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        subprocess.run(["rm", "-rf", str(old)], check=True)
    old = linked_copy(args.seed_bundles, work / "bundles")
    add, remove = change_files(old, work, args.add, args.remove)
    update_s = walrus("bundle", "update", "--bundles", str(work / "bundles"), "--add", str(add),
                      "--remove", str(remove))  # fmt: skip
    new = resolve_bundle(work / "bundles")
    start = time.perf_counter()
    loaded = load_bundle(new, LoadOptions("cpu"))
    check_s = time.perf_counter() - start
    removed = set(remove.read_text().split())
    with add.open() as handle:
        titles = {row["item_id"]: row["title"] for row in csv.DictReader(handle)}
    checks = answers_check(new, removed, titles)
    compact_s = walrus("bundle", "compact", "--bundles", str(work / "bundles"))
    return {
        "items": len(loaded.items) - args.add,
        "users": len(loaded.users),
        "index": loaded.manifest.indexes["text"].factory,
        "added": args.add,
        "withdrawn": args.remove,
        "update_s": update_s,
        "target_s": TARGET_S,
        "service_checks_s": check_s,
        "compact_s": compact_s,
        **disk(new, old),
        **checks,
    }


def table(r: dict[str, Any]) -> str:
    """The docs table (docs/benchmarks.md prints this, tested against the kept run)."""
    mb = 1e6
    return "\n".join(
        [
            "| items | added | withdrawn | update s | goal s | new version's own MB "
            "| changed files MB | whole bundle MB | service checks s | compaction s |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {r['items']:,} | {r['added']:,} | {r['withdrawn']:,} | {r['update_s']:.1f} "
            f"| {r['target_s']:.0f} | {r['own_bytes'] / mb:.0f} "
            f"| {r['changed_files_bytes'] / mb:.0f} | {r['bundle_bytes'] / mb:.0f} "
            f"| {r['service_checks_s']:.1f} | {r['compact_s']:.1f} |",
        ]
    )


def plot(r: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(7, 2.8))
    left, right = fig.subplots(1, 2)
    left.bar(["update", "service checks", "compaction"],
             [r["update_s"], r["service_checks_s"], r["compact_s"]])  # fmt: skip
    left.axhline(r["target_s"], color="k", lw=0.8, ls="--")
    left.set_ylabel("seconds")
    right.bar(["new version's own", "changed files", "whole bundle"],
              [r["own_bytes"] / 1e6, r["changed_files_bytes"] / 1e6, r["bundle_bytes"] / 1e6])  # fmt: skip
    right.set_ylabel("MB")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        f"+{r['added']:,} / -{r['withdrawn']:,} items on {r['items']:,} ({r['index']}), 2 cores",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seed-bundles", type=Path, default=SEED)
    ap.add_argument("--work", type=Path, default=Path("artifacts/bench-update"))
    ap.add_argument("--add", type=int, default=1000)
    ap.add_argument("--remove", type=int, default=1000)


def passed(result: dict[str, Any]) -> bool:
    """Within the time target, the new version's own bytes no more than its changed files,
    and no withdrawn item in any answer."""
    return (
        result["update_s"] <= TARGET_S
        and result["own_bytes"] <= result["changed_files_bytes"]
        and result["withdrawn_in_answers"] == 0
    )


BENCHMARK = Benchmark("update", __doc__ or "", arguments, run, table, passed, plot)
main = BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
