"""WALS on a real Spark session (local[2]) against the single-machine exact solver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.core.params import WALSParams
from models.spark.wals import SparkWALSError, check_master, fit
from models.wals import WALS
from tests.support.tools import tool_or_skip, walrus


@pytest.fixture(autouse=True)
def java() -> None:
    """Spark needs Java 17: skipped without it, but failed in CI, whose .ci/run installs it."""
    if not os.environ.get("JAVA_HOME"):
        tool_or_skip("java", "apt-get install default-jre-headless")


def frame(spark, matrix: sp.csr_matrix, weights: np.ndarray | None = None):
    coo = matrix.tocoo()
    columns = {
        "user": coo.row.astype(np.int64),
        "item": coo.col.astype(np.int64),
        "target": coo.data,
    }
    if weights is not None:
        columns["weight"] = weights
    return spark.createDataFrame(pd.DataFrame(columns))


def local_exact(matrix, weights=None, **params):
    model = WALS(solver="cholesky", device="cpu", calculate_training_loss=True, **params)
    return model.fit(matrix, weights)


def assert_same(result, model):
    scale = np.abs(model.user_factors).max()
    np.testing.assert_allclose(result.user_factors, model.user_factors, atol=1e-4 * scale)
    scale = np.abs(model.item_factors).max()
    np.testing.assert_allclose(result.item_factors, model.item_factors, atol=1e-4 * scale)
    np.testing.assert_allclose(result.loss, model.history.loss, rtol=1e-4)
    np.testing.assert_allclose(result.col_weight_values, model.col_weight_values)


@pytest.mark.parametrize(
    "params",
    [
        {"dim": 4, "regularization": 0.1, "unobserved_weight": 0.2, "iterations": 3, "seed": 3},
        {
            "dim": 5,
            "regularization": 0.01,
            "unobserved_weight": 0.05,
            "iterations": 2,
            "regularization_exp": 1.0,
            "row_weights": "power",
            "col_weights": "linear",
            "weight_scale": 2.0,
        },
    ],
    ids=["uniform", "weighted-schemes"],
)
def test_equal_to_the_single_machine_exact_solver(spark, tmp_path, params):
    m = sp.random(40, 25, density=0.2, random_state=2, format="csr", dtype=np.float64)
    m.data[:] = 1.0
    m.data[m.indices == 7] = 0  # an item nobody touched: zero factors on both engines
    m.eliminate_zeros()
    result, _, _ = fit(
        spark,
        frame(spark, m),
        40,
        25,
        WALSParams(**params),
        str(tmp_path / "ckpt"),
        n_blocks=3,
        checkpoint_interval=1,
    )
    model = local_exact(m, **params)
    assert_same(result, model)
    assert np.all(result.item_factors[7] == 0)
    assert any((tmp_path / "ckpt").rglob("part-*")), "no checkpoint was written"


def test_explicit_weights_equal_too(spark, tmp_path, tiny_matrix):
    weights = np.random.default_rng(0).uniform(0.5, 3.0, tiny_matrix.nnz)
    w = tiny_matrix.copy()
    w.data = weights
    params = {"dim": 3, "regularization": 0.1, "iterations": 2}
    result, _, _ = fit(
        spark,
        frame(spark, tiny_matrix, weights),
        30,
        20,
        WALSParams(**params),
        str(tmp_path),
        has_weights=True,
        n_blocks=2,
    )
    assert_same(result, local_exact(tiny_matrix, w, **params))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            {"user": [0, 5], "item": [0, 1], "target": [1.0, 1.0]},
            "user index 5 is not in the id map",
        ),
        ({"user": [0, 0], "item": [1, 1], "target": [1.0, 1.0]}, "appears twice"),
        ({"user": [0, 1], "item": [0, 1], "target": [1.0, float("nan")]}, "NaN"),
    ],
)
def test_bad_input_is_one_clear_error(spark, tmp_path, rows, message):
    df = spark.createDataFrame(pd.DataFrame(rows)).repartition(3)  # some partitions empty
    with pytest.raises(SparkWALSError, match=message):
        fit(spark, df, 3, 3, WALSParams(dim=2, iterations=1), str(tmp_path))


def test_empty_input_is_refused(spark, tmp_path):
    df = spark.createDataFrame(pd.DataFrame({"user": [0], "item": [0], "target": [1.0]})).limit(0)
    with pytest.raises(SparkWALSError, match="empty"):
        fit(spark, df, 3, 3, WALSParams(dim=2, iterations=1), str(tmp_path))


def test_an_unreachable_master_fails_fast():
    with pytest.raises(
        SparkWALSError, match=r"cannot reach the Spark master spark://127\.0\.0\.1:9"
    ):
        check_master("spark://127.0.0.1:9", timeout_s=2)


def test_the_job_never_imports_torch_or_scipy():
    code = "import sys, models.spark.wals; print(sorted(m for m in ('torch', 'scipy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def train_on_spark(config: Path, master: str, out: Path, *extra: str):
    return walrus(
        "train",
        "wals",
        "-c",
        str(config),
        "--engine",
        "spark",
        "--master",
        master,
        "--out",
        str(out),
        *extra,
    )


def test_cli_spark_engine_writes_parquet_and_the_local_model_files(tiny_config, tmp_path):
    """`walrus train wals --engine spark`: the same files the local engine writes (so train
    hybrid and export take either), equal to the local exact solver's, plus Parquet shards."""
    common = ("--set", "wals.solver=cholesky", "--set", "wals.iterations=2")
    spark_run = train_on_spark(tiny_config, "local[2]", tmp_path / "spark", *common)
    assert spark_run.returncode == 0, spark_run.stderr[-2000:]
    local_run = walrus(
        "train", "wals", "-c", str(tiny_config), "--out", str(tmp_path / "local"), *common
    )
    assert local_run.returncode == 0, local_run.stderr
    spark_dir, local_dir = tmp_path / "spark", tmp_path / "local"
    assert {p.name for p in local_dir.iterdir()} <= {p.name for p in spark_dir.iterdir()}
    for name in ("user_factors.npy", "item_factors.npy", "item_gramian.npy"):
        np.testing.assert_allclose(np.load(spark_dir / name), np.load(local_dir / name), atol=1e-4)
    users = pd.read_parquet(spark_dir / "user_factors.parquet").sort_values("index")
    assert len(list((spark_dir / "user_factors.parquet").glob("part-*.parquet"))) > 1  # sharded
    ids = json.loads((spark_dir / "user_ids.json").read_text())
    assert list(users["id"]) == ids
    np.testing.assert_allclose(np.stack(users["factors"]), np.load(spark_dir / "user_factors.npy"))
    assert not list(tmp_path.glob(".spark*")), "a half-written output was left behind"


def test_cli_spark_engine_bad_master_exits_2_and_writes_nothing(tiny_config, tmp_path):
    run = train_on_spark(tiny_config, "spark://127.0.0.1:9", tmp_path / "out")
    assert run.returncode == 2
    assert "cannot reach the Spark master" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def job(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "models.spark.job",
            "--master",
            "local[2]",
            "--shuffle-partitions",
            "4",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_standalone_job_numbers_ids_and_writes_parquet(synthetic_files, tmp_path):
    """What the compose profile's driver runs: raw ids in, Parquet factors and wals.json out;
    the factors equal the exact local solver's on the same (sorted) id numbering."""
    out = tmp_path / "wals"
    params = {"dim": 4, "iterations": 2, "regularization": 0.1}
    run = job(
        "--interactions",
        str(synthetic_files / "interactions.csv"),
        "--out",
        str(out),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--params",
        json.dumps(params),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads((out / "wals.json").read_text())
    assert len(meta["history"]["loss"]) == 2
    raw = pd.read_csv(synthetic_files / "interactions.csv").astype(str)
    users, items = sorted(raw["user_id"].unique()), sorted(raw["item_id"].unique())
    m = sp.csr_matrix(
        (
            np.ones(len(raw)),
            (raw["user_id"].map(users.index), raw["item_id"].map(items.index)),
        ),
        shape=(len(users), len(items)),
    )
    model = local_exact(m, **params)
    got = pd.read_parquet(out / "item_factors.parquet").sort_values("index")
    assert list(got["id"]) == items
    np.testing.assert_allclose(np.stack(got["factors"]), model.item_factors, atol=1e-4)


def test_the_standalone_job_refuses_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu1,i1\n")
    run = job(
        "--interactions", str(bad), "--out", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path)
    )
    assert run.returncode == 2
    assert "missing column(s) ['item_id', 'user_id']" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()
