"""Shared fixtures: tiny synthetic data made on the fly; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_matrix() -> sp.csr_matrix:
    """30 users x 20 items, ~20% observed, targets 1.0."""
    m = sp.random(30, 20, density=0.2, random_state=1, format="csr", dtype=np.float64)
    m.data[:] = 1.0
    return m


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """interactions.csv and catalog.csv of the tiny synthetic set."""
    from models.data.synthetic import SIZES, generate

    out = tmp_path_factory.mktemp("synthetic")
    interactions, catalog = generate(SIZES["tiny"], seed=0)
    interactions.to_csv(out / "interactions.csv", index=False)
    catalog.to_csv(out / "catalog.csv", index=False)
    return out


@pytest.fixture(scope="session")
def tiny_config(synthetic_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline TOML over the tiny synthetic files, outputs in a temp dir."""
    out = tmp_path_factory.mktemp("artifacts")
    path = out / "tiny.toml"
    path.write_text(
        f"""
output_dir = "{out}"
[data]
interactions = "{synthetic_files / "interactions.csv"}"
catalog = "{synthetic_files / "catalog.csv"}"
[wals]
dim = 8
iterations = 6
regularization = 0.1
"""
    )
    return path


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The MovieLens directory from WALRUS_MOVIELENS_DIR; skips when absent."""
    raw = os.environ.get("WALRUS_MOVIELENS_DIR")
    if not raw:
        pytest.skip("WALRUS_MOVIELENS_DIR is not set: point it at ml-latest-small to run this")
    path = Path(raw)
    if not (path / "ratings.csv").is_file():
        pytest.skip(f"WALRUS_MOVIELENS_DIR={raw} holds no ratings.csv")
    return path
