"""What a user gets: the served hybrid against implicit's ALS, tuned, on MovieLens.

The protocol a new user would follow, end to end:

1. MovieLens ml-latest-small, ratings >= 4 as positives; a seeded per-user 20% holdout
   (``models.data.splits.holdout_split``) is the test set. Only the training part is written
   out: every later step sees nothing else.
2. implicit's ALS, tuned over a grid (factors, regularization, alpha) on a validation split
   carved from the training data, refitted on all of it with the best values.
3. walrus: ``walrus tune`` (WALS and head on a validation split of the training data),
   ``walrus train hybrid`` and ``walrus export`` with the tuned config, ``walrus serve``;
   then every test user is asked over HTTP for 20 items.

Both are scored by the same ``models.metrics.evaluate_scores`` (Recall@20, NDCG@20, the
user's training items excluded). The offline hybrid (the same trained model, exact search)
is reported too: it must equal the served one up to ANN differences.

    python -m bench.quality --movielens ../shared/data/ml-latest-small
"""

from __future__ import annotations

import argparse
import itertools
import json
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
from models.config import PipelineConfig, load_config
from models.core.ids import IdMap
from models.data.movielens import load_movielens
from models.data.splits import holdout_split
from models.evaluation import ranked_rows
from models.metrics import evaluate_scores
from models.training import TrainedArtifacts

K = 20
# Wide enough that the best values sit inside it, not on its edge (``on_grid_edge`` says).
GRID = {
    "factors": [16, 32, 64, 128],
    "regularization": [0.1, 1.0, 10.0, 30.0, 100.0],
    "alpha": [1.0, 2.0, 5.0, 10.0, 20.0],
}


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
    q = queries[queries["user_id"].astype(str).isin(users._index)]
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


def tune_implicit(train: sp.csr_matrix, seed: int) -> dict[str, Any]:
    """The grid on a per-user 20% validation split of ``train``; the best refitted on all."""
    val = holdout_split(train, 0.2, seed=seed + 1)
    trials = []
    for factors, reg, alpha in itertools.product(*GRID.values()):
        model = fit_implicit(val.train, factors, reg, alpha)
        m = evaluate_scores(implicit_scores(model), val.train, val.test, (K,))
        trials.append(
            {
                "factors": factors,
                "regularization": reg,
                "alpha": alpha,
                "validation_recall": m[f"recall@{K}"],
            }
        )
    best = max(trials, key=lambda t: t["validation_recall"])
    best["on_grid_edge"] = [k for k, v in GRID.items() if best[k] in (v[0], v[-1])]
    model = fit_implicit(train, best["factors"], best["regularization"], best["alpha"])
    return {"best": best, "trials": trials, "model": model}


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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="walrus tune --set overrides")
    ap.add_argument("--report", type=Path, help="only print the table of a JSON result")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.movielens is None or not (args.movielens / "ratings.csv").is_file():
        print("error: --movielens DIR (or WALRUS_MOVIELENS_DIR) must hold ratings.csv")
        return 2

    work = Path(tempfile.mkdtemp(prefix="walrus-quality-"))
    try:
        payload = measure(args, work)
        path = write_results("quality", payload)
        plot(payload, RESULTS / "quality.png")
        print(report(payload))
        print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both sides on one split: implicit tuned, walrus tuned, trained, exported, served."""
    split = split_movielens(args.movielens, work, args.seed)
    train, test = split["train"], split["test"]
    start = time.perf_counter()
    implicit = tune_implicit(train, args.seed)
    implicit_s = time.perf_counter() - start
    cfg, timings = run_walrus(args, work)
    hybrid = TrainedArtifacts.load(cfg.output_dir / "hybrid").hybrid
    tested = np.flatnonzero(np.diff(test.indptr) > 0)
    offline = np.full((train.shape[0], K), -1, dtype=np.int64)
    for row in tested:
        offline[row] = hybrid.recommend(hybrid.request(K, user=int(row))).items
    port = 8931
    cmd = [str(Path(sys.executable).with_name("walrus")), "serve"]
    env = {"WALRUS_BUNDLE": str(cfg.bundles_dir), "WALRUS_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    with running(cmd, env, url, {"user_id": split["users"].ids[0], "k": K}):
        served, serve_s = served_scores(url, split)
    n_items = train.shape[1]
    rows = {
        "implicit ALS (tuned)": evaluate_scores(
            implicit_scores(implicit["model"]), train, test, (K,)
        ),
        "walrus WALS (tuned)": evaluate_scores(
            lambda r: hybrid.wals.user_factors[r] @ hybrid.wals.item_factors.T, train, test, (K,)
        ),
        "walrus hybrid, offline": evaluate_scores(
            from_rankings(offline, n_items), train, test, (K,)
        ),
        "walrus hybrid, served": evaluate_scores(from_rankings(served, n_items), train, test, (K,)),
    }
    agree = [set(offline[r].tolist()) == set(served[r].tolist()) for r in tested]
    return {
        "k": K,
        "test_users": int(rows["walrus hybrid, served"]["users"]),
        "results": {name: {k: float(v) for k, v in m.items()} for name, m in rows.items()},
        "served_equals_offline_share": float(np.mean(agree)),
        "implicit": {"best": implicit["best"], "trials": implicit["trials"], "seconds": implicit_s},
        "walrus_tuned": {
            "wals": {
                k: getattr(cfg.wals, k)
                for k in ("dim", "regularization", "unobserved_weight", "regularization_exp")
            },
            "head": cfg.head.model_dump(
                include={"loss", "learning_rate", "weight_decay", "cold_item_share"}
            ),
            **timings,
            "serve_s": serve_s,
        },
    }


def run_walrus(args: argparse.Namespace, work: Path) -> tuple[PipelineConfig, dict[str, float]]:
    """`walrus tune`, `train hybrid` and `export` on the split's training files, as a user
    would run them; the tuned config and each command's seconds."""
    base = load_config(args.config)
    config = work / "config.toml"
    config.write_text(
        args.config.read_text()
        .replace(str(base.data.interactions), str(work / "data" / "interactions.csv"))
        .replace(str(base.data.catalog), str(work / "data" / "catalog.csv"))
        .replace(str(base.data.queries), str(work / "data" / "queries.csv"))
        .replace(f'output_dir = "{base.output_dir}"', f'output_dir = "{work / "out"}"')
    )
    tuned = work / "tuned.toml"
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


def report(r: dict[str, Any]) -> str:
    k = r["k"]
    lines = [
        f"| model | Recall@{k} | NDCG@{k} |",
        "|---|---|---|",
        *(
            f"| {name} | {m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} |"
            for name, m in r["results"].items()
        ),
    ]
    print_table(
        "MovieLens per-user holdout",
        [{"model": n, **m} for n, m in r["results"].items()],
        ["model", f"recall@{r['k']}", f"ndcg@{r['k']}", "users"],
    )
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    names = list(r["results"])
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    k = r["k"]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["results"][n][f"recall@{k}"] for n in names], 0.4, label=f"Recall@{k}")
    ax.bar(x + 0.2, [r["results"][n][f"ndcg@{k}"] for n in names], 0.4, label=f"NDCG@{k}")
    ax.set_xticks(x, names, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title(f"MovieLens, per-user 20% holdout, {r['test_users']} users")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
