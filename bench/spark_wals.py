"""WALS on Spark against Spark MLlib's ALS and the single-machine solver, side by side.

On ``local[2]`` (the same 2 cores for everyone), dimension 64:

- walrus-on-Spark (``models.spark.wals``: TF's WALS objective, exact per-row solves);
- Spark MLlib ALS (``implicitPrefs``; mapped onto the same objective as closely as it allows:
  ``alpha = 1 / w0`` gives the same confidence ratio, and since MLlib scales lambda by each
  row's count (ALS-WR), ``regParam = lambda / (w0 * mean count)`` matches it on average only);
- the single-machine solvers (torch, exact Cholesky and the default CG), as a reference;

on the synthetic medium set (100k x 20k, ~5M interactions; 80% used for training) and walrus-
on-Spark alone on the synthetic large set (200k x 40k, ~10M). Each Spark fit runs twice, with
``--short`` and ``--long`` iterations; the difference gives seconds per iteration apart from
setup. Shuffle bytes and peak executor memory come from Spark's own REST API (the stages and
executors of the fit's jobs); Recall@20 on the same holdout.

    python -m bench.spark_wals [--short 1] [--long 3] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.ml.recommendation import ALS

from bench.common import print_table, write_results
from models.core.params import WALSParams
from models.data import build_dataset, read_catalog, read_interactions
from models.data.splits import holdout_split
from models.data.synthetic import SIZES, generate
from models.metrics import ranking_metrics
from models.spark.wals import fit as spark_fit
from models.spark.wals import session
from models.wals import WALS

DIM, REG, W0 = 64, 0.001, 0.1


def synthetic(size: str) -> sp.csr_matrix:

    cache = Path("artifacts/bench-data") / f"synthetic-{size}"
    if not (cache / "interactions.csv").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        interactions, catalog = generate(SIZES[size], seed=0)
        interactions.to_csv(cache / "interactions.csv", index=False)
        catalog.to_csv(cache / "catalog.csv", index=False)
    ds = build_dataset(
        read_interactions(cache / "interactions.csv"), read_catalog(cache / "catalog.csv")
    )
    return ds.matrix


class SparkMetrics:
    """Shuffle bytes and peak executor memory of the jobs run since ``mark``, read from the
    application's REST API (the driver's UI port)."""

    def __init__(self, spark: Any) -> None:
        self.url = spark.sparkContext.uiWebUrl
        self.app = spark.sparkContext.applicationId
        self.seen: set[int] = set()

    def _get(self, path: str) -> Any:
        return httpx.get(f"{self.url}/api/v1/applications/{self.app}/{path}", timeout=30).json()

    def mark(self) -> None:
        self.seen = {s["stageId"] for s in self._get("stages")}

    def since_mark(self) -> dict[str, float]:
        stages = [s for s in self._get("stages") if s["stageId"] not in self.seen]
        executors = self._get("executors")
        peak = max(
            (e.get("peakMemoryMetrics", {}).get("JVMHeapMemory", 0) for e in executors), default=0
        )
        python_peak = max(
            (
                e.get("peakMemoryMetrics", {}).get("ProcessTreePythonRSSMemory", 0)
                for e in executors
            ),
            default=0,
        )
        return {
            "shuffle_write_bytes": float(sum(s.get("shuffleWriteBytes", 0) for s in stages)),
            "peak_jvm_heap_bytes": float(peak),
            "peak_python_rss_bytes": float(python_peak),
        }


def recall(
    user_f: np.ndarray, item_f: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix
) -> float:
    return ranking_metrics(user_f, item_f, train, test, (20,))["recall@20"]


def timed_pair(
    run: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, float]]], short: int, long: int
) -> dict[str, Any]:
    """Fit with ``short`` and ``long`` iterations: setup and seconds per iteration apart,
    measured the same way for every engine (the difference of the two wall times). ``run``
    has been warmed up, so one-time costs (JVM, Python workers) fall in neither."""
    start = time.perf_counter()
    _, _, first = run(short)
    t_short = time.perf_counter() - start
    start = time.perf_counter()
    user_f, item_f, extra = run(long)
    t_long = time.perf_counter() - start
    per_iteration = (t_long - t_short) / (long - short)
    shuffle = extra.get("shuffle_write_bytes", 0.0) - first.get("shuffle_write_bytes", 0.0)
    return {
        "shuffle_bytes_per_iter": shuffle / (long - short),
        "fit_s_short": t_short,
        "fit_s_long": t_long,
        "s_per_iter": per_iteration,
        "setup_s": max(0.0, t_short - short * per_iteration),
        "_factors": (user_f, item_f),
        **extra,
    }


def timed_once(
    run: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, float]]], iterations: int
) -> dict[str, Any]:
    """One fit: seconds per iteration from the model's own history (single machine)."""
    start = time.perf_counter()
    user_f, item_f, extra = run(iterations)
    total = time.perf_counter() - start
    per_iteration = extra.pop("s_per_iter")
    return {
        "fit_s_long": total,
        "s_per_iter": per_iteration,
        "setup_s": total - iterations * per_iteration,
        "_factors": (user_f, item_f),
        **extra,
    }


def walrus_spark(spark: Any, metrics: SparkMetrics, train: sp.csr_matrix, work: str):
    coo = train.tocoo()
    frame = spark.createDataFrame(
        pd.DataFrame(
            {
                "user": coo.row.astype(np.int64),
                "item": coo.col.astype(np.int64),
                "target": np.ones(coo.nnz),
            }
        )
    ).cache()
    frame.count()

    def run(iterations: int):
        metrics.mark()
        params = WALSParams(
            dim=DIM, regularization=REG, unobserved_weight=W0, iterations=iterations
        )
        result, users, items = spark_fit(
            spark, frame, train.shape[0], train.shape[1], params, tempfile.mkdtemp(dir=work)
        )
        users.unpersist()
        items.unpersist()
        extra = metrics.since_mark()
        extra["s_per_iter_measured"] = sum(result.seconds) / max(1, len(result.seconds))
        return result.user_factors, result.item_factors, extra

    return run


def mllib(spark: Any, metrics: SparkMetrics, train: sp.csr_matrix):

    coo = train.tocoo()
    frame = spark.createDataFrame(
        pd.DataFrame(
            {
                "user": coo.row.astype(np.int32),
                "item": coo.col.astype(np.int32),
                "rating": np.ones(coo.nnz, np.float32),
            }
        )
    ).cache()
    frame.count()
    mean_count = train.nnz / train.shape[0]

    def run(iterations: int):
        metrics.mark()
        als = ALS(
            rank=DIM,
            maxIter=iterations,
            regParam=REG / (W0 * mean_count),
            implicitPrefs=True,
            alpha=1.0 / W0,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=0,
            coldStartStrategy="drop",
        )
        model = als.fit(frame)
        users = model.userFactors.toPandas()
        items = model.itemFactors.toPandas()
        user_f = np.zeros((train.shape[0], DIM), np.float32)
        item_f = np.zeros((train.shape[1], DIM), np.float32)
        user_f[users["id"].to_numpy()] = np.stack(users["features"].to_numpy())
        item_f[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())
        return user_f, item_f, metrics.since_mark()

    return run


def single_machine(train: sp.csr_matrix, solver: str):
    def run(iterations: int):
        model = WALS(
            dim=DIM,
            regularization=REG,
            unobserved_weight=W0,
            iterations=iterations,
            solver=solver,
            device="cpu",
        )
        model.fit(train)
        seconds = model.history.seconds
        return model.user_factors, model.item_factors, {"s_per_iter": sum(seconds) / len(seconds)}

    return run


def report(r: dict[str, Any]) -> str:
    """The Markdown table of docs/benchmarks.md, from a results file."""
    m = r["machine"]
    short, long = r["iterations"]
    lines = [
        f"Machine: {m['machine']}, {m['cpus']} CPUs, Python {m['python']}; Spark {r['master']}, "
        f"dim {r['dim']}; Spark fits timed at {short} and {long} iterations after a warm-up.",
        "",
        "| data | engine | setup s | s / iteration | walrus ÷ this | shuffle / iteration MB "
        "| peak JVM heap GB | peak Python RSS GB | Recall@20 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        on_spark = "Spark" in row["engine"]
        ratio = row.get("walrus_spark_ratio")
        cells = [
            row["dataset"],
            row["engine"],
            f"{row['setup_s']:.1f}",
            f"{row['s_per_iter']:.2f}",
            "" if ratio is None else f"{ratio:.2f}",
            f"{row['shuffle_bytes_per_iter'] / 1e6:.0f}" if on_spark else "",
            f"{row['peak_jvm_heap_bytes'] / 1e9:.2f}" if on_spark else "",
            f"{row['peak_python_rss_bytes'] / 1e9:.2f}" if on_spark else "",
            f"{row['recall_at_20']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure_set(
    spark: Any, metrics: SparkMetrics, work: str, size: str, compare: bool, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One synthetic set: walrus on Spark; with ``compare``, MLlib and the single machine."""
    matrix = synthetic(size)
    split = holdout_split(matrix, 0.2, seed=0)
    name = f"synthetic-{size} ({matrix.shape[0]}x{matrix.shape[1]}, {split.train.nnz} training nnz)"
    spark_engines: list[tuple[str, Any]] = [
        ("walrus-on-Spark (exact)", walrus_spark(spark, metrics, split.train, work))
    ]
    local_engines: list[tuple[str, Any, int]] = []
    if compare:
        if not args.skip_mllib:
            spark_engines.append(
                ("Spark MLlib ALS (implicitPrefs)", mllib(spark, metrics, split.train))
            )
        # the exact solver's torch path is slow on CPU (see docs/scaling.md): one iteration
        local_engines.append(
            ("single machine, exact (cholesky)", single_machine(split.train, "cholesky"), 1)
        )
        local_engines.append(
            ("single machine, default (cg)", single_machine(split.train, "cg"), args.long)
        )
    measured: list[tuple[str, dict[str, Any]]] = []
    for label, run in spark_engines:
        run(1)  # warm-up: JVM code paths, Python workers, cached input
        measured.append((label, timed_pair(run, args.short, args.long)))
    for label, run, iterations in local_engines:
        measured.append((label, timed_once(run, iterations)))
    rows = []
    for label, row in measured:
        user_f, item_f = row.pop("_factors")
        row.update(
            dataset=name,
            engine=label,
            dim=DIM,
            recall_at_20=recall(user_f, item_f, split.train, split.test),
        )
        rows.append(row)
        print(f"{name} {label}: {row['s_per_iter']:.2f} s/iteration", flush=True)
    return rows


COLUMNS = [
    "dataset",
    "engine",
    "setup_s",
    "s_per_iter",
    "s_per_iter_measured",
    "walrus_spark_ratio",
    "shuffle_bytes_per_iter",
    "peak_jvm_heap_bytes",
    "peak_python_rss_bytes",
    "recall_at_20",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, help="print the Markdown table of a results file")
    parser.add_argument("--short", type=int, default=1)
    parser.add_argument("--long", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-mllib", action="store_true")
    args = parser.parse_args()
    if args.report is not None:
        print(report(json.loads(args.report.read_text())))
        return
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = session(
        "local[2]",
        "walrus-bench",
        **{
            "spark.driver.memory": "6g",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.executor.processTreeMetrics.enabled": "true",
            "spark.sql.shuffle.partitions": "4",
        },
    )
    metrics = SparkMetrics(spark)
    work = tempfile.mkdtemp(prefix="walrus-bench-spark-")
    rows: list[dict[str, Any]] = []
    sets = [("medium", True)] + ([] if args.skip_large else [("large", False)])
    for size, compare in sets:
        rows += measure_set(spark, metrics, work, size, compare, args)
    walrus_rows = {r["dataset"]: r for r in rows if r["engine"].startswith("walrus")}
    for r in rows:
        if r["engine"].startswith("Spark MLlib"):
            r["walrus_spark_ratio"] = walrus_rows[r["dataset"]]["s_per_iter"] / r["s_per_iter"]
    print_table("WALS on Spark (local[2], dim 64)", rows, COLUMNS)
    path = write_results(
        "spark_wals",
        {
            "master": "local[2]",
            "dim": DIM,
            "regularization": REG,
            "unobserved_weight": W0,
            "iterations": [args.short, args.long],
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    spark.stop()


if __name__ == "__main__":
    main()
