"""The offline steps wired together: load the data a config names, split it, train WALS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import DataConfig, PipelineConfig, SplitConfig
from models.core.errors import WalrusError
from models.data import Dataset, build_dataset, read_catalog, read_interactions, read_table
from models.data.io import check_ids
from models.data.splits import Split, cold_item_split, holdout_split, user_split
from models.wals import WALS


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read and validate the interactions and catalog a ``DataConfig`` names."""
    interactions = read_interactions(cfg.interactions, cfg.rating_threshold)
    catalog = read_catalog(cfg.catalog) if cfg.catalog is not None else None
    return build_dataset(interactions, catalog, cfg.text_template)


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
) -> WALS:
    """Fit WALS on ``train`` (targets 1.0; its values are weights when ``has_weights``)."""
    model = WALS(**cfg.wals.estimator_kwargs())
    return model.fit(
        binarize(train),
        train if has_weights else None,
        validation=validation,
        early_stopping_patience=cfg.wals.early_stopping_patience,
        callback=callback,
    )


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
