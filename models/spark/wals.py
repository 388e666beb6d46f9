"""WALS on Spark: the exact objective of ``models.wals.WALS``, each row solved in numpy.

The same w0, lambda, row and column weights, ``regularization_exp`` and Glorot initialisation
from the same seed; items are solved first, then users, every iteration. With the same data it
gives the single-machine exact solver's factors (``solver="cholesky"``), which
``tests/models/spark/test_wals.py`` checks on ``local[2]``.

One half-step: the fixed side's factor blocks go once to each block that needs them (the
out-blocks of ``models.spark.blocks``), grouped by destination block, joined with the solving
side's in-blocks (co-partitioned, so only the factors shuffle), solved per partition in numpy.
The Gramian ``w0 V^T V`` is a tree aggregate of per-block Gramians, broadcast once per
half-step. Lineage is cut by checkpointing every ``checkpoint_interval`` iterations: without it
an iterative job's lineage grows until the driver dies of a StackOverflowError.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
from pyspark import RDD, SparkContext, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from models.core.errors import WalrusError
from models.core.fold_in import weights_from_counts
from models.core.glorot import glorot_rows
from models.core.params import WALSParams
from models.spark.blocks import (
    Block,
    Stats,
    block_edges,
    block_of,
    build_block,
    messages,
    solve_block,
)

log = logging.getLogger(__name__)

# Raised inside a task, re-raised on the driver as one line (``_action``).
MARK = "walrus-spark-input:"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # rows, cols, targets, weights


class SparkWALSError(WalrusError):
    """Bad input to the Spark job, or a cluster it cannot use."""


@dataclass
class SparkFit:
    """What ``fit`` returns: the factors on the driver, and what it measured."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    col_weight_values: np.ndarray
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0


def check_master(master: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when a standalone master (``spark://host:port``) is not there:
    Spark itself would retry for a minute and then print pages of stack traces."""
    if not master.startswith("spark://"):
        return
    for hostport in master[len("spark://") :].split(","):
        url = urlparse(f"spark://{hostport}")
        try:
            with socket.create_connection((url.hostname or "", url.port or 7077), timeout_s):
                return
        except OSError as exc:
            last = exc
    raise SparkWALSError(f"cannot reach the Spark master {master}: {last}; check spark.master")


def session(master: str, app_name: str = "walrus-wals", **conf: str) -> SparkSession:
    """A SparkSession on ``master`` (``local[*]``, ``spark://host:7077``, ``k8s://...``)."""
    check_master(master)
    if master.startswith("local"):
        # Workers on this machine run this interpreter (else: whatever `python3` is on PATH,
        # which may lack numpy or pyarrow); a cluster's images set PYSPARK_PYTHON themselves.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # pyspark warns on every DataFrame conversion that pandas 3 is "not yet fully supported";
    # the job converts plain numeric columns only.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {"spark.ui.showConsoleProgress": "false", **conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _action(run: Callable[[], Any]) -> Any:
    """Run a Spark action; an input error raised in a task becomes one SparkWALSError."""
    try:
        return run()
    except Exception as exc:
        text = str(exc)
        if MARK in text:
            line = text[text.index(MARK) + len(MARK) :].splitlines()[0].strip()
            raise SparkWALSError(line) from None
        raise


def _pack(batches: Iterable[Any], has_weight: bool) -> Iterator[Any]:
    """Arrow batches of (user, item, target[, weight]) as one binary cell each: a (4, n)
    float64 array (indices are exact below 2**53). Arrow in, bytes out: no Python object per
    row crosses between the JVM and Python."""

    for batch in batches:
        columns = [batch.column(k).to_numpy(zero_copy_only=False) for k in range(3)]
        weight = batch.column(3).to_numpy(zero_copy_only=False) if has_weight else columns[2] * 0
        packed = np.stack([np.asarray(c, dtype=np.float64) for c in (*columns, weight)])
        yield pa.RecordBatch.from_arrays([pa.array([packed.tobytes()], pa.binary())], ["packed"])


def _unpack(packed: bytes) -> Arrays:
    data = np.frombuffer(packed, dtype=np.float64).reshape(4, -1)
    if not np.all(np.isfinite(data[:2])):
        raise ValueError(f"{MARK} a user or item index is empty (null)")
    return data[0].astype(np.int64), data[1].astype(np.int64), data[2].copy(), data[3].copy()


def _check(arrays: Arrays, n_users: int, n_items: int) -> Arrays:
    u, i, a, w = arrays
    for name, idx, n in (("user", u, n_users), ("item", i, n_items)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise ValueError(f"{MARK} {name} index {bad} is not in the id map (0..{n - 1})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(w))):
        raise ValueError(f"{MARK} a target or weight is NaN or infinite")
    return arrays


def _split(arrays: Arrays, edges: np.ndarray, by: int) -> Iterator[tuple[int, Arrays]]:
    """The entries of one chunk, cut by the block of column ``by`` (0: user, 1: item)."""
    blocks = block_of(arrays[by], edges)
    order = np.argsort(blocks, kind="stable")
    bounds = np.searchsorted(blocks[order], np.arange(len(edges)))
    for b in range(len(edges) - 1):
        take = order[bounds[b] : bounds[b + 1]]
        if len(take):
            yield b, tuple(x[take] for x in arrays)  # type: ignore[misc]


def _concat(parts: Iterable[Arrays]) -> Arrays:
    parts = list(parts)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))  # type: ignore[return-value]


def _empty() -> Arrays:
    return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class _Layout:
    """What every stage of a fit needs: sizes, block edges, the parameters."""

    n_users: int
    n_items: int
    user_edges: np.ndarray
    item_edges: np.ndarray
    params: WALSParams
    has_weights: bool

    @property
    def n_user_blocks(self) -> int:
        return len(self.user_edges) - 1

    @property
    def n_item_blocks(self) -> int:
        return len(self.item_edges) - 1


def fit(
    spark: SparkSession,
    interactions: DataFrame,
    n_users: int,
    n_items: int,
    params: WALSParams,
    checkpoint_dir: str,
    *,
    has_weights: bool = False,
    n_blocks: int = 0,
    checkpoint_interval: int = 5,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[SparkFit, RDD, RDD]:
    """Fit WALS on ``interactions`` (columns ``user``, ``item`` as indices into the id maps,
    ``target``, and ``weight`` when ``has_weights``: the observed-entry weights W_ij).

    Returns the fit and the user and item factor RDDs (``(block, array)``, still cached) for
    ``write_factors``. ``n_blocks`` defaults to Spark's default parallelism.
    """
    if n_users < 1 or n_items < 1:
        raise SparkWALSError(f"need at least one user and one item, got {n_users} x {n_items}")
    if checkpoint_interval < 1:
        raise SparkWALSError("checkpoint_interval must be >= 1")
    sc: SparkContext = spark.sparkContext
    sc.setCheckpointDir(checkpoint_dir)
    started = time.perf_counter()
    wanted = n_blocks or sc.defaultParallelism
    layout = _Layout(
        n_users,
        n_items,
        block_edges(n_users, wanted),
        block_edges(n_items, wanted),
        params,
        has_weights,
    )
    chunks = _read_entries(sc, interactions, layout, wanted)
    col_weight_values = _col_weights(chunks, layout)
    user_blocks, item_blocks = _build_blocks(sc, chunks, layout, col_weight_values)
    users = _initial_factors(sc, layout, "user")
    result = SparkFit(np.zeros(0), np.zeros(0), col_weight_values)
    result.setup_seconds = time.perf_counter() - started
    log.info(
        "spark wals: %d x %d blocks, setup %.1f s",
        layout.n_user_blocks,
        layout.n_item_blocks,
        result.setup_seconds,
    )
    users, items = _iterate(
        sc, layout, (user_blocks, item_blocks), users, result, checkpoint_interval, callback
    )
    result.user_factors = _collect(users, n_users, params.dim)
    result.item_factors = _collect(items, n_items, params.dim)
    return result, users, items


def _read_entries(sc: SparkContext, interactions: DataFrame, layout: _Layout, wanted: int) -> RDD:
    """The input as checked (user, item, target, weight) array chunks, cached."""
    columns = ["user", "item", "target"] + (["weight"] if layout.has_weights else [])
    missing = [c for c in columns if c not in interactions.columns]
    if missing:
        raise SparkWALSError(f"interactions lack the column(s) {missing}")
    # Many small input partitions (a DataFrame made from pandas has one per 10,000 rows) cost
    # a task each; a few per core are enough to read and cut the entries.
    most = 4 * max(wanted, sc.defaultParallelism)
    if interactions.rdd.getNumPartitions() > most:
        interactions = interactions.coalesce(most)
    has_weights, n_users, n_items = layout.has_weights, layout.n_users, layout.n_items
    return (
        interactions.select(*[F.col(c).cast("double") for c in columns])
        .mapInArrow(lambda batches: _pack(batches, has_weights), "packed binary")
        .rdd.map(lambda row: _check(_unpack(row[0]), n_users, n_items))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def _col_weights(chunks: RDD, layout: _Layout) -> np.ndarray:
    """c_j from the items' counts, summed over the cluster."""
    n_items, p = layout.n_items, layout.params
    col_counts = _action(
        lambda: chunks.map(lambda t: np.bincount(t[1], minlength=n_items)).treeAggregate(
            np.zeros(n_items, dtype=np.int64), np.add, np.add
        )
    )
    if int(col_counts.sum()) == 0:
        raise SparkWALSError("no interactions: the input is empty")
    return weights_from_counts(col_counts, p.col_weights, p.weight_scale, p.weight_exponent)


def _with_weights(b: int, arrays: Arrays, layout: _Layout, col_w: np.ndarray) -> Arrays:
    """A user block's entries with their W_ij: given, or w0 + r_i c_j from the counts."""
    u, i, a, w = arrays
    p = layout.params
    if layout.has_weights:
        if np.any(w <= 0):
            raise ValueError(f"{MARK} weights must be > 0 on every interaction")
        return arrays
    start = layout.user_edges[b]
    counts = np.bincount(u - start, minlength=int(layout.user_edges[b + 1] - start))
    row_w = weights_from_counts(counts, p.row_weights, p.weight_scale, p.weight_exponent)
    return u, i, a, p.unobserved_weight + row_w[u - start] * col_w[i]


def _grouped(sc: SparkContext, entries: RDD, edges: np.ndarray) -> RDD:
    """Entries keyed by block, one concatenated value per block, every block present."""
    n = len(edges) - 1
    every = sc.parallelize([(b, _empty()) for b in range(n)], n)
    return entries.union(every).groupByKey(n).mapValues(_concat)


def _block(
    kv: tuple[int, Arrays], edges: np.ndarray, other: np.ndarray, p: WALSParams
) -> tuple[int, Block]:
    b, (rows, cols, targets, weights) = kv
    block = build_block(b, edges, other, rows, cols, targets, weights, p)
    same_row = np.diff(np.repeat(np.arange(block.n_rows), np.diff(block.indptr))) == 0
    if np.any(same_row & (np.diff(block.position) == 0)):
        raise ValueError(f"{MARK} a (user, item) pair appears twice: aggregate them first")
    return b, block


def _build_blocks(
    sc: SparkContext, chunks: RDD, layout: _Layout, col_weight_values: np.ndarray
) -> tuple[RDD, RDD]:
    """Both sides' blocks (in- and out-blocks), cached; the input chunks are dropped."""
    col_w = sc.broadcast(col_weight_values)
    user_edges, item_edges, p = layout.user_edges, layout.item_edges, layout.params
    user_entries = _grouped(sc, chunks.flatMap(lambda t: _split(t, user_edges, 0)), user_edges)
    user_entries = user_entries.map(
        lambda kv: (kv[0], _with_weights(kv[0], kv[1], layout, col_w.value)), True
    ).persist(StorageLevel.MEMORY_AND_DISK)
    swapped = user_entries.flatMap(
        lambda kv: _split((kv[1][1], kv[1][0], kv[1][2], kv[1][3]), item_edges, 0)
    )
    item_entries = _grouped(sc, swapped, item_edges)
    user_blocks = user_entries.map(lambda kv: _block(kv, user_edges, item_edges, p), True)
    item_blocks = item_entries.map(lambda kv: _block(kv, item_edges, user_edges, p), True)
    user_blocks.persist(StorageLevel.MEMORY_AND_DISK)
    item_blocks.persist(StorageLevel.MEMORY_AND_DISK)
    _action(lambda: (user_blocks.count(), item_blocks.count()))
    chunks.unpersist()
    user_entries.unpersist()
    return user_blocks, item_blocks


def _initial_factors(sc: SparkContext, layout: _Layout, side: str) -> RDD:
    """A side's Glorot factors by block, as the single-machine fit draws them: users first,
    then items from the same generator."""
    seed, dim = layout.params.seed, layout.params.dim
    users = side == "user"
    n_rows = layout.n_users if users else layout.n_items
    edges = layout.user_edges if users else layout.item_edges
    skip = 0 if users else layout.n_users * dim
    n = len(edges) - 1
    return (
        sc.parallelize(range(n), n)
        .map(lambda b: (b, glorot_rows(seed, n_rows, dim, edges[b], edges[b + 1], skip)))
        .partitionBy(n)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def _iterate(
    sc: SparkContext,
    layout: _Layout,
    blocks: tuple[RDD, RDD],
    users: RDD,
    result: SparkFit,
    checkpoint_interval: int,
    callback: Callable[[int, float], None] | None,
) -> tuple[RDD, RDD]:
    """The sweeps (items, then users), each one's loss recorded in ``result``."""
    user_blocks, item_blocks = blocks
    w0 = layout.params.unobserved_weight
    user_gram = _action(lambda: users.values().map(_gram).treeReduce(np.add))
    items: RDD | None = None
    solved_old: list[RDD] = []
    for it in range(layout.params.iterations):
        start = time.perf_counter()
        checkpoint = (it + 1) % checkpoint_interval == 0
        items_solved, item_stats = _half_step(
            sc, item_blocks, user_blocks, users, user_gram, w0, layout.n_item_blocks, checkpoint
        )
        items = items_solved.mapValues(lambda r: r[0])
        users_solved, user_stats = _half_step(
            sc,
            user_blocks,
            item_blocks,
            items,
            item_stats.gramian,
            w0,
            layout.n_user_blocks,
            checkpoint,
        )
        users = users_solved.mapValues(lambda r: r[0])
        user_gram = user_stats.gramian
        for old in solved_old:
            old.unpersist()
        solved_old = [items_solved, users_solved]
        result.seconds.append(time.perf_counter() - start)
        loss = (
            user_stats.observed
            + w0 * float(np.sum(user_stats.gramian * item_stats.gramian))
            + user_stats.regularization
            + item_stats.regularization
        )
        result.loss.append(loss)
        log.info("spark wals iteration %d loss %.6g (%.1f s)", it, loss, result.seconds[-1])
        if callback is not None:
            callback(it, loss)
    if items is None:  # no iterations: both sides as initialised
        items = _initial_factors(sc, layout, "item")
    return users, items


def _gram(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64.T @ x64


def _half_step(
    sc: SparkContext,
    solving: RDD,
    fixed_blocks: RDD,
    fixed_factors: RDD,
    fixed_gram: np.ndarray,
    w0: float,
    n_solving: int,
    checkpoint: bool,
) -> tuple[RDD, Stats]:
    """Solve every block of ``solving`` against ``fixed_factors``; the solved RDD holds
    ``(block, (factors, Stats))`` and is cached (and checkpointed when asked)."""
    w0_gram = sc.broadcast(w0 * fixed_gram)
    sent = (
        fixed_blocks.join(fixed_factors)
        .flatMap(lambda kv: messages(kv[1][0], kv[1][1]))
        .groupByKey(n_solving)
    )
    solved = (
        solving.leftOuterJoin(sent)
        .mapValues(lambda v: solve_block(v[0], dict(v[1] or ()), w0_gram.value, w0))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    if checkpoint:
        solved.checkpoint()
    stats = _action(lambda: solved.values().map(lambda r: r[1]).treeReduce(lambda a, b: a + b))
    w0_gram.unpersist()
    return solved, stats


def _collect(factors: RDD, n_rows: int, dim: int) -> np.ndarray:
    out = np.zeros((n_rows, dim), dtype=np.float32)
    parts = sorted(factors.collect(), key=lambda kv: kv[0])
    sizes = [len(x) for _, x in parts]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    for (_, x), lo in zip(parts, edges[:-1], strict=True):
        out[lo : lo + len(x)] = x
    return out


FACTOR_SCHEMA = T.StructType(
    [
        T.StructField("index", T.LongType(), False),
        T.StructField("factors", T.ArrayType(T.FloatType(), False), False),
    ]
)


def factor_frame(spark: SparkSession, factors: RDD, edges: np.ndarray) -> DataFrame:
    """``(index, factors)`` rows from a ``(block, array)`` RDD, written by the executors."""

    def rows(kv: tuple[int, np.ndarray]) -> Iterator[tuple[int, list[float]]]:
        b, x = kv
        start = int(edges[b])
        for k, vec in enumerate(x.tolist()):
            yield start + k, vec

    return spark.createDataFrame(factors.flatMap(rows), FACTOR_SCHEMA)


def write_factors(
    spark: SparkSession,
    factors: RDD,
    n_rows: int,
    ids: DataFrame,
    path: str,
) -> None:
    """Sharded Parquet ``(index, id, factors)``: ``ids`` maps ``index`` to ``id``."""
    edges = _edges_of(factors, n_rows)
    frame = factor_frame(spark, factors, edges).join(ids, "index", "left")
    frame.select("index", "id", "factors").write.mode("error").parquet(path)


def _edges_of(factors: RDD, n_rows: int) -> np.ndarray:
    sizes = dict(factors.mapValues(len).collect())
    counts = [sizes[b] for b in range(len(sizes))]
    edges = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if edges[-1] != n_rows:
        raise SparkWALSError(f"factor blocks hold {edges[-1]} rows, expected {n_rows}")
    return edges
