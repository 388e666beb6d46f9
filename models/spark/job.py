"""The Spark job on its own, for ``spark-submit`` or a Spark image without the rest of walrus.

    python -m models.spark.job --master spark://master:7077 \\
        --interactions /data/interactions.parquet --out /data/wals \\
        --checkpoint-dir /data/checkpoints --params '{"dim": 64, "iterations": 10}'

Reads ``user_id, item_id`` (and ``weight`` if present: observed-entry weights) from Parquet or
CSV with a header, numbers the ids in Spark (sorted, so every run numbers them the same),
fits, and writes ``user_factors.parquet`` and ``item_factors.parquet`` (``index, id,
factors``, sharded) and ``wals.json`` (parameters and loss per iteration) into ``--out``,
through a temporary folder renamed at the end. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from models.core.errors import WalrusError
from models.core.params import WALSParams
from models.spark.wals import SparkWALSError, fit, session, write_factors


def read_interactions(spark: SparkSession, path: str) -> DataFrame:
    if not path.endswith((".parquet", ".csv")) and not Path(path).is_dir():
        raise SparkWALSError(f"{path}: use a .parquet or .csv file or folder")
    if path.endswith(".csv"):
        frame = spark.read.csv(path, header=True, inferSchema=True)
    else:
        frame = spark.read.parquet(path)
    missing = {"user_id", "item_id"} - set(frame.columns)
    if missing:
        raise SparkWALSError(f"{path}: missing column(s) {sorted(missing)}; need user_id, item_id")
    return frame


def id_map(frame: DataFrame, column: str) -> DataFrame:
    """``(id, index)``: the distinct ids, sorted, numbered from 0."""
    ids = frame.select(F.col(column).cast("string").alias("id")).distinct().orderBy("id")
    return ids.rdd.map(lambda r: r[0]).zipWithIndex().toDF(["id", "index"])


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    frame = read_interactions(spark, args.interactions)
    if frame.filter(F.col("user_id").isNull() | F.col("item_id").isNull()).limit(1).count():
        raise SparkWALSError(f"{args.interactions}: a user_id or item_id is empty")
    users, items = id_map(frame, "user_id").cache(), id_map(frame, "item_id").cache()
    n_users, n_items = users.count(), items.count()
    has_weights = "weight" in frame.columns
    indexed = (
        frame.withColumn("user_id", F.col("user_id").cast("string"))
        .withColumn("item_id", F.col("item_id").cast("string"))
        .join(
            users.withColumnRenamed("index", "user").withColumnRenamed("id", "user_id"), "user_id"
        )
        .join(
            items.withColumnRenamed("index", "item").withColumnRenamed("id", "item_id"), "item_id"
        )
        .withColumn("target", F.lit(1.0))
    )
    if has_weights:
        indexed = indexed.withColumn("weight", F.col("weight").cast("double"))
    params = WALSParams.from_mapping(json.loads(args.params))
    result, user_factors, item_factors = fit(
        spark,
        indexed,
        n_users,
        n_items,
        params,
        args.checkpoint_dir,
        has_weights=has_weights,
        n_blocks=args.blocks,
    )
    out = Path(args.out)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write_factors(spark, user_factors, n_users, users, str(tmp / "user_factors.parquet"))
        write_factors(spark, item_factors, n_items, items, str(tmp / "item_factors.parquet"))
        meta = {
            "params": params.__dict__,
            "n_users": n_users,
            "n_items": n_items,
            "history": {"loss": result.loss, "seconds": result.seconds},
        }
        (tmp / "wals.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--params", default="{}", help="WALS parameters as JSON")
    parser.add_argument(
        "--blocks", type=int, default=0, help="blocks per side (0: Spark's parallelism)"
    )
    parser.add_argument(
        "--shuffle-partitions", type=int, default=200, help="spark.sql.shuffle.partitions (id maps)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        spark = session(
            args.master,
            "walrus-wals-job",
            **{"spark.sql.shuffle.partitions": str(args.shuffle_partitions)},
        )
        meta = run(spark, args)
    except (WalrusError, json.JSONDecodeError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    losses = meta["history"]["loss"]
    print(
        f"wals: {meta['n_users']} users x {meta['n_items']} items, final loss "
        f"{losses[-1] if losses else float('nan'):.6g}, "
        f"{time.perf_counter() - started:.1f} s -> {args.out}"
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
