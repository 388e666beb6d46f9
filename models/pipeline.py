"""The offline steps wired together: load the data a config names, split it, train WALS."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import DataConfig, PipelineConfig, SplitConfig
from models.core.errors import WalrusError
from models.core.ids import IdMap
from models.data import Dataset, build_dataset, read_catalog, read_interactions, read_table
from models.data.io import check_ids
from models.data.splits import Split, cold_item_split, holdout_split, user_split
from models.wals import WALS, FitHistory

T = TypeVar("T")


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read and validate the interactions and catalog a ``DataConfig`` names."""
    interactions = read_interactions(cfg.interactions, cfg.rating_threshold)
    catalog = read_catalog(cfg.catalog) if cfg.catalog is not None else None
    return build_dataset(
        interactions, catalog, cfg.text_template, cfg.attributes, cfg.tag_separator
    )


def load_query_log(path: Path | None) -> pd.DataFrame | None:
    """The optional query log (``user_id, query, item_id``), validated like other inputs."""
    if path is None:
        return None
    frame = read_table(path, ("user_id", "query", "item_id"))
    check_ids(frame, Path(path), ("user_id", "item_id"))
    return frame


def observed(dataset: Dataset) -> sp.csr_matrix:
    """The matrix that splits partition: W_ij where the data gave weights, else A_ij (1.0)."""
    return dataset.weights if dataset.weights is not None else dataset.matrix


def make_split(dataset: Dataset, name: str, cfg: SplitConfig) -> Split:
    """One of ``holdout``, ``users``, ``cold_items`` (see ``models.data.splits``)."""
    matrix = observed(dataset)
    if name == "holdout":
        return holdout_split(matrix, cfg.holdout_fraction, cfg.seed)
    if name == "users":
        return user_split(matrix, cfg.user_fraction, cfg.fold_in_fraction, cfg.seed)
    if name == "cold_items":
        return cold_item_split(matrix, cfg.cold_item_fraction, cfg.seed)
    raise WalrusError(f"unknown split {name!r}: use holdout, users or cold_items")


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same pattern with every stored value 1.0: which items each user interacted with."""
    out = sp.csr_matrix(matrix, copy=True)
    out.data = np.ones_like(out.data)
    return out


def fit_wals(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    validation: sp.csr_matrix | None = None,
    callback: Callable[[int, float, float | None], None] | None = None,
    parquet: ParquetOutput | None = None,
    initial_user_factors: np.ndarray | None = None,
) -> WALS:
    """Fit WALS on ``train`` (targets 1.0; its values are weights when ``has_weights``), on
    the engine ``wals.engine`` names: the one place that chooses it. The Spark engine also
    writes the factors as Parquet when given ``parquet``. ``initial_user_factors``: a warm
    start (``WALS.fit``; the local engine only)."""
    if cfg.wals.engine == "spark":
        if validation is not None or cfg.wals.early_stopping_patience:
            raise WalrusError(
                "wals.engine = 'spark' has no validation or early stopping: use the local engine"
            )
        if initial_user_factors is not None:
            raise WalrusError("wals.engine = 'spark' has no warm start: use the local engine")
        return fit_wals_spark(cfg, train, has_weights, callback, parquet)
    return local_wals(cfg).fit(
        binarize(train),
        train if has_weights else None,
        validation=validation,
        early_stopping_patience=cfg.wals.early_stopping_patience,
        callback=callback,
        initial_user_factors=initial_user_factors,
    )


def local_wals(cfg: PipelineConfig) -> WALS:
    """An unfitted ``WALS`` with the config's parameters and machine settings."""
    w = cfg.wals
    return WALS(
        w.as_params(),
        device=w.device,
        num_threads=w.num_threads,
        calculate_training_loss=w.calculate_training_loss,
    )


@dataclass
class ParquetOutput:
    """Where ``fit_wals_spark`` writes the factors as sharded Parquet, and their ids."""

    directory: Path
    users: IdMap
    items: IdMap

    def files(self, users: T, items: T) -> list[tuple[T, IdMap, str]]:
        """(a side's factors, its ids, where its Parquet goes), users then items."""
        return [
            (factors, ids, str(self.directory / f"{name}_factors.parquet"))
            for name, factors, ids in (("user", users, self.users), ("item", items, self.items))
        ]


def fit_wals_spark(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    callback: Callable[[int, float, float | None], None] | None = None,
    parquet: ParquetOutput | None = None,
) -> WALS:
    """WALS on the Spark cluster ``cfg.spark`` names: the same objective, initialisation and
    order as the local engine's exact solver; returned as a ``WALS`` with its factors."""
    # pyspark is the optional `spark` extra: imported only when this engine is chosen.
    from models.spark.wals import fit, session, write_factors

    spark = session(
        cfg.spark.master,
        **{"spark.sql.execution.arrow.pyspark.enabled": "true", **cfg.spark.conf},
    )
    frame = spark.createDataFrame(interaction_frame(train, has_weights))
    root = cfg.spark.checkpoint_dir or str(cfg.output_dir / "spark-checkpoints")
    checkpoints = f"{root.rstrip('/')}/{uuid.uuid4().hex}"
    report = None if callback is None else (lambda it, loss: callback(it, loss, None))
    try:
        result, users, items = fit(
            spark,
            frame,
            train.shape[0],
            train.shape[1],
            cfg.wals.as_params(),
            checkpoints,
            has_weights=has_weights,
            n_blocks=cfg.spark.blocks,
            checkpoint_interval=cfg.spark.checkpoint_interval,
            callback=report,
        )
        for factors, ids, path in parquet.files(users, items) if parquet else []:
            id_frame = spark.createDataFrame(
                pd.DataFrame({"index": np.arange(len(ids), dtype=np.int64), "id": ids.ids})
            )
            write_factors(spark, factors, len(ids), id_frame, path)
    finally:
        if "://" not in checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    model = local_wals(cfg)
    model.user_factors = result.user_factors
    model.set_item_factors(result.item_factors)
    model.col_weight_values = result.col_weight_values
    model.history = FitHistory(loss=result.loss, seconds=result.seconds)
    return model


def interaction_frame(train: sp.csr_matrix, has_weights: bool) -> pd.DataFrame:
    """The training matrix as the Spark job reads it: user, item, target[, weight]."""
    coo = sp.csr_matrix(train).tocoo()
    columns = {
        "user": coo.row.astype(np.int64),
        "item": coo.col.astype(np.int64),
        "target": np.ones(coo.nnz),
    }
    if has_weights:
        columns["weight"] = coo.data.astype(np.float64)
    return pd.DataFrame(columns)


def save_wals(directory: Path, model: WALS, dataset: Dataset) -> None:
    """Factors, Gramian, parameters and id maps: everything a later step needs, no pickle."""
    model.save(directory)
    dataset.users.save(directory / "user_ids.json")
    dataset.items.save(directory / "item_ids.json")
    np.save(directory / "item_popularity.npy", dataset.item_popularity)
    sp.save_npz(directory / "user_items.npz", dataset.matrix, compressed=False)
    (directory / "data.json").write_text(
        json.dumps(
            {
                "n_users": len(dataset.users),
                "n_items": len(dataset.items),
                "n_interactions": int(dataset.matrix.nnz),
                "has_weights": dataset.weights is not None,
            },
            indent=2,
        )
    )
