"""What a user gets: the served hybrid against implicit's ALS, both tuned the same way.

The protocol a new user would follow, end to end, repeated over several seeds of the split:

1. MovieLens ml-latest-small, ratings >= 4 as positives; a seeded per-user 20% holdout
   (``models.data.splits.holdout_split``) is the test set. Only the training part is written
   out: every later step sees nothing else.
2. walrus from the seed's defaults (the values `walrus tune` searches, and [tuned_on],
   dropped from the config; the rest kept): ``walrus tune`` with as many WALS trials as implicit's grid has
   points, ``walrus train hybrid``, ``walrus export``, ``walrus serve``; then every test user
   is asked over HTTP for 20 items.
3. implicit's ALS over a grid (factors, regularization, alpha) on the very validation split
   ``walrus tune`` carved (``models.tuning.validation_split`` of the same training matrix),
   refitted on all of the training data with the best values.

Both are scored by the same ``models.metrics.evaluate_scores`` (Recall@20, NDCG@20, the
user's training items excluded). The result holds each seed's rows, their mean and standard
deviation, and the per-seed differences; a side is called ahead only where the mean
difference is larger than the differences' spread.

    python -m bench.quality --movielens ../shared/data/ml-latest-small
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from bench.common import RESULTS, print_table, write_results
from bench.serve import running
from models.config import PipelineConfig, load_config, write_config
from models.core.ids import IdMap
from models.data.movielens import load_movielens
from models.data.splits import holdout_split
from models.evaluation import ranked_rows
from models.metrics import evaluate_scores
from models.pipeline import load_dataset, observed
from models.trained import TrainedArtifacts
from models.tuning import fingerprint, searched_defaults, tuned_values, validation_split

K = 20
# 100 points; the WALS study gets as many trials. Wide enough that the best values sit
# inside it, not on its edge (``on_grid_edge`` says), with walrus's largest dim as its own.
GRID: dict[str, list[float]] = {
    "factors": [32, 64, 128, 256],
    "regularization": [1.0, 10.0, 30.0, 100.0, 300.0],
    "alpha": [1.0, 5.0, 10.0, 20.0, 40.0],
}
GRID_POINTS = math.prod(len(v) for v in GRID.values())
SEEDS = (0, 1, 2)
ROWS = (
    "implicit ALS (tuned)",
    "walrus WALS (tuned)",
    "walrus hybrid, offline",
    "walrus hybrid, served",
)


def split_movielens(directory: Path, work: Path, seed: int) -> dict[str, Any]:
    """Training files for walrus (positives only) and the matrices the scores use."""
    interactions, catalog, queries = load_movielens(directory)
    positives = interactions[interactions["rating"] >= 4.0]
    users = IdMap(sorted(positives["user_id"].astype(str).unique()))
    items = IdMap(catalog["item_id"].astype(str).tolist())
    rows = np.array([users.index(u) for u in positives["user_id"].astype(str)])
    cols = np.array([items.index(i) for i in positives["item_id"].astype(str)])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    matrix.sum_duplicates()
    split = holdout_split(matrix, 0.2, seed=seed)
    coo = split.train.tocoo()
    data = work / "data"
    data.mkdir(parents=True)
    pd.DataFrame(
        {"user_id": [users.ids[u] for u in coo.row], "item_id": [items.ids[i] for i in coo.col]}
    ).to_csv(data / "interactions.csv", index=False)
    catalog.to_csv(data / "catalog.csv", index=False)
    train_pairs = set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))
    # The query log may only hold what the training part holds: tags of test pairs go.
    q = queries[queries["user_id"].astype(str).isin(users.positions)]
    keep = [
        (users.index(u), items.index(i)) in train_pairs
        for u, i in zip(q["user_id"].astype(str), q["item_id"].astype(str), strict=True)
    ]
    q[keep].to_csv(data / "queries.csv", index=False)
    return {"users": users, "items": items, "train": split.train, "test": split.test}


def fit_implicit(train: sp.csr_matrix, factors: int, regularization: float, alpha: float) -> Any:

    model = AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=15,
        random_state=0,
        calculate_training_loss=False,
    )
    with threadpool_limits(1, "blas"):
        model.fit(train, show_progress=False)
    return model


def implicit_scores(model: Any) -> Any:
    return lambda rows: model.user_factors[rows] @ model.item_factors.T


def tune_implicit(cfg: PipelineConfig, split: dict[str, Any]) -> dict[str, Any]:
    """The grid on ``walrus tune``'s own validation split (the same training matrix, read
    as walrus reads it, and the same carving); the best refitted on all of it. Returns the
    model's factors in the split's row and column order."""
    dataset = load_dataset(cfg.data)
    train = observed(dataset)
    val = validation_split(train, cfg)
    trials: list[dict[str, Any]] = []
    for factors, reg, alpha in itertools.product(*GRID.values()):
        model = fit_implicit(val.train, int(factors), reg, alpha)
        m = evaluate_scores(implicit_scores(model), val.train, val.test, (K,))
        trials.append(
            {
                "factors": int(factors),
                "regularization": reg,
                "alpha": alpha,
                "validation_recall": m[f"recall@{K}"],
            }
        )
    best = max(trials, key=lambda t: t["validation_recall"])
    best["on_grid_edge"] = [k for k, v in GRID.items() if best[k] in (v[0], v[-1])]
    model = fit_implicit(train, int(best["factors"]), best["regularization"], best["alpha"])
    rows = [dataset.users.index(u) for u in split["users"].ids]
    items = np.zeros((len(split["items"]), model.item_factors.shape[1]), np.float32)
    known = [i for i, item in enumerate(split["items"].ids) if item in dataset.items]
    items[known] = model.item_factors[[dataset.items.index(split["items"].ids[i]) for i in known]]
    return {
        "best": best,
        "trials": trials,
        "user_factors": model.user_factors[rows],
        "item_factors": items,
        "fingerprint": fingerprint(train),
    }


def walrus_cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "walrus.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr[-2000:]}")


def served_scores(url: str, split: dict[str, Any]) -> tuple[np.ndarray, float]:
    """(rows ranked by the service for every test user, seconds)."""
    users, items = split["users"], split["items"]
    rows = np.flatnonzero(np.diff(split["test"].indptr) > 0)
    ranked = np.full((split["train"].shape[0], K), -1, dtype=np.int64)
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30) as client:
        for row in rows:
            r = client.post("/v1/recommend", json={"user_id": users.ids[row], "k": K})
            r.raise_for_status()
            got = [items.index(it["item_id"]) for it in r.json()["items"]]
            ranked[row, : len(got)] = got
    return ranked, time.perf_counter() - start


def from_rankings(ranked: np.ndarray, n_items: int) -> Any:
    return lambda rows: ranked_rows(n_items, [ranked[r][ranked[r] >= 0] for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--movielens", type=Path, default=os.environ.get("WALRUS_MOVIELENS_DIR"))
    ap.add_argument("--config", type=Path, default=Path("configs/movielens.toml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--set", action="append", default=[], help="walrus tune --set overrides")
    ap.add_argument("--report", type=Path, help="only print the table of a JSON result")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.movielens is None or not (args.movielens / "ratings.csv").is_file():
        print("error: --movielens DIR (or WALRUS_MOVIELENS_DIR) must hold ratings.csv")
        return 2
    runs = []
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix=f"walrus-quality-{seed}-"))
        try:
            runs.append(measure(args, seed, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "implicit"})[:2000])
    payload = summarise(runs)
    path = write_results("quality", payload)
    plot(payload, RESULTS / "quality.png")
    print(report(payload))
    print(f"wrote {path}")
    return 0


def measure(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """One seed: walrus tuned from the seed's defaults, trained, exported and served;
    implicit tuned on the same validation split."""
    split = split_movielens(args.movielens, work, seed)
    train, test = split["train"], split["test"]
    cfg, timings = run_walrus(args, seed, work)
    start = time.perf_counter()
    implicit = tune_implicit(cfg, split)
    implicit_s = time.perf_counter() - start
    if cfg.tuned_on is None or cfg.tuned_on.fingerprint != implicit["fingerprint"]:
        raise RuntimeError("walrus tune and the grid did not tune on the same training matrix")
    hybrid = TrainedArtifacts.load(cfg.output_dir / "hybrid").hybrid
    tested = np.flatnonzero(np.diff(test.indptr) > 0)
    offline = np.full((train.shape[0], K), -1, dtype=np.int64)
    for row in tested:
        offline[row] = hybrid.recommend(hybrid.request(K, user=int(row))).items
    served, serve_s = serve_and_ask(cfg, split)
    n_items = train.shape[1]

    def score(fn: Any) -> dict[str, float]:
        return {k: float(v) for k, v in evaluate_scores(fn, train, test, (K,)).items()}

    wals = hybrid.wals
    agree = [set(offline[r].tolist()) == set(served[r].tolist()) for r in tested]
    return {
        "seed": seed,
        "results": dict(
            zip(
                ROWS,
                [
                    score(lambda r: implicit["user_factors"][r] @ implicit["item_factors"].T),
                    score(lambda r: wals.user_factors[r] @ wals.item_factors.T),
                    score(from_rankings(offline, n_items)),
                    score(from_rankings(served, n_items)),
                ],
                strict=True,
            )
        ),
        "served_equals_offline_share": float(np.mean(agree)),
        "validation": {
            "implicit_grid_best": implicit["best"]["validation_recall"],
            "walrus_wals_study_best": cfg.tuned_on.wals_validation_value,
            "walrus_head_study_best": cfg.tuned_on.head_validation_value,
        },
        "implicit": {"best": implicit["best"], "trials": implicit["trials"], "seconds": implicit_s},
        "walrus_tuned": {**tuned_values(cfg), **timings, "serve_s": serve_s},
    }


def serve_and_ask(cfg: PipelineConfig, split: dict[str, Any]) -> tuple[np.ndarray, float]:
    port = 8931
    cmd = [str(Path(sys.executable).with_name("walrus")), "serve"]
    env = {"WALRUS_BUNDLE": str(cfg.bundles_dir), "WALRUS_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    with running(cmd, env, url, {"user_id": split["users"].ids[0], "k": K}):
        return served_scores(url, split)


def untuned(path: Path, work: Path, seed: int, n_trials: int) -> PipelineConfig:
    """The config a new user starts from: ``path``'s settings pointed at the split's
    training files, the searched values back at the seed's defaults
    (``models.tuning.searched_defaults``, as `walrus eval --tune` starts), ``n_trials`` WALS
    trials, and the validation split seeded as implicit's grid is."""
    base = searched_defaults(load_config(path))
    data = base.data.model_copy(
        update={
            "interactions": work / "data" / "interactions.csv",
            "catalog": work / "data" / "catalog.csv",
            "queries": work / "data" / "queries.csv",
        }
    )
    tune = base.tune.model_copy(update={"wals_trials": n_trials, "seed": seed + 1})
    return base.model_copy(
        update={
            "data": data,
            "output_dir": work / "out",
            "tune": tune,
        }
    )


def run_walrus(
    args: argparse.Namespace, seed: int, work: Path
) -> tuple[PipelineConfig, dict[str, float]]:
    """`walrus tune`, `train hybrid` and `export` on the split's training files, as a user
    would run them; the tuned config and each command's seconds."""
    config, tuned = work / "config.toml", work / "tuned.toml"
    n_trials = GRID_POINTS
    write_config(untuned(args.config, work, seed, n_trials), config, "bench.quality")
    overrides = [arg for s in args.set for arg in ("--set", s)]
    timings = {}
    for name, cli in (
        ("tune", ["tune", "-c", str(config), "--out", str(tuned), *overrides]),
        ("train", ["train", "hybrid", "-c", str(tuned)]),
        ("export", ["export", "-c", str(tuned)]),
    ):
        start = time.perf_counter()
        walrus_cli(*cli)
        timings[f"{name}_s"] = time.perf_counter() - start
    return load_config(tuned), timings


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of every row over the seeds, and the served hybrid's
    per-seed difference from implicit with a verdict."""
    metrics = (f"recall@{K}", f"ndcg@{K}")
    summary = {
        row: {
            f"{m}_{stat}": float(fn([r["results"][row][m] for r in runs]))
            for m in metrics
            for stat, fn in (("mean", np.mean), ("std", lambda x: np.std(x, ddof=1)))
        }
        for row in ROWS
    }
    comparisons = {}
    for m in metrics:
        diffs = [
            r["results"]["walrus hybrid, served"][m] - r["results"]["implicit ALS (tuned)"][m]
            for r in runs
        ]
        mean, spread = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
        verdict = "ahead" if mean > spread else "behind" if -mean > spread else "within the spread"
        comparisons[m] = {"differences": diffs, "mean": mean, "std": spread, "walrus": verdict}
    return {
        "k": K,
        "seeds": [r["seed"] for r in runs],
        "grid_points": GRID_POINTS,
        "summary": summary,
        "served_vs_implicit": comparisons,
        "served_equals_offline_share": min(r["served_equals_offline_share"] for r in runs),
        "runs": runs,
    }


def report(r: dict[str, Any]) -> str:
    k, n = r["k"], len(r["seeds"])
    lines = [
        f"| model | Recall@{k} (mean ± sd, {n} seeds) | NDCG@{k} (mean ± sd) |",
        "|---|---|---|",
        *(
            f"| {name} | {s[f'recall@{k}_mean']:.4f} ± {s[f'recall@{k}_std']:.4f} "
            f"| {s[f'ndcg@{k}_mean']:.4f} ± {s[f'ndcg@{k}_std']:.4f} |"
            for name, s in r["summary"].items()
        ),
        "",
        "| seed | implicit grid: best validation Recall@20 | walrus tune, WALS study | "
        "walrus tune, head study (the hybrid) | served − implicit, Recall@20 |",
        "|---|---|---|---|---|",
        *(
            f"| {run['seed']} | {run['validation']['implicit_grid_best']:.4f} "
            f"| {run['validation']['walrus_wals_study_best']:.4f} "
            f"| {run['validation']['walrus_head_study_best'] or 0:.4f} "
            f"| {d:+.4f} |"
            for run, d in zip(
                r["runs"], r["served_vs_implicit"][f"recall@{k}"]["differences"], strict=True
            )
        ),
    ]
    c = r["served_vs_implicit"][f"recall@{k}"]
    lines += [
        "",
        f"Served hybrid − implicit, Recall@{k}: {c['mean']:+.4f} ± {c['std']:.4f} over "
        f"{n} seeds: walrus is **{c['walrus']}**.",
        "",
        "The served bundle returned the same 20 items as the offline evaluation of the same "
        f"trained model for {r['served_equals_offline_share']:.1%} of the test users (the "
        "lowest share over the seeds).",
    ]
    print_table(
        "MovieLens per-user holdout",
        [{"model": name, **s} for name, s in r["summary"].items()],
        ["model", f"recall@{k}_mean", f"recall@{k}_std", f"ndcg@{k}_mean", f"ndcg@{k}_std"],
    )
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    names = list(r["summary"])
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    k = r["k"]
    x = np.arange(len(names))
    for offset, metric in ((-0.2, f"recall@{k}"), (0.2, f"ndcg@{k}")):
        means = [r["summary"][n][f"{metric}_mean"] for n in names]
        stds = [r["summary"][n][f"{metric}_std"] for n in names]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=metric)
    ax.set_xticks(x, names, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title(f"MovieLens, per-user 20% holdout, seeds {r['seeds']} (mean ± sd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
