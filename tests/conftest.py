"""Shared fixtures: tiny synthetic data made on the fly; nothing is downloaded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from tests.support.configs import TINY_TOML
from tests.support.s3 import S3Server
from tests.support.servers import Server
from tests.support.tools import movielens_or_skip


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the MovieLens data are marked ``movielens``, those that build a bundle or
    start a server ``slow``: ``-m "not slow"`` gives a quick run."""
    slow_fixtures = {"tiny_trained", "tiny_bundle", "server", "client", "served_defaults"}
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "movielens_dir" in fixtures:
            item.add_marker(pytest.mark.movielens)
        if fixtures & slow_fixtures or item.get_closest_marker("movielens"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The MovieLens directory from WALRUS_MOVIELENS_DIR."""
    return movielens_or_skip(os.environ.get("WALRUS_MOVIELENS_DIR"))


@pytest.fixture(scope="session")
def tiny_pipeline_config(synthetic_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-pipeline TOML (tiny RoBERTa, small head) over the tiny synthetic files."""
    out = tmp_path_factory.mktemp("pipeline")
    path = out / "pipeline.toml"
    path.write_text(TINY_TOML.format(out=out, data=synthetic_files))
    return path


@pytest.fixture(scope="session")
def tiny_trained(tiny_pipeline_config: Path):
    """``TrainedArtifacts`` of the whole pipeline on tiny data, trained once per session."""
    from models.config import load_config
    from models.pipeline import load_dataset
    from models.training import train_all

    cfg = load_config(tiny_pipeline_config)
    trained = train_all(cfg, load_dataset(cfg.data), None, cfg.output_dir / "tiny-encoder")
    trained.save(_fresh(cfg.output_dir / "hybrid"))
    return trained


@pytest.fixture(scope="session")
def tiny_bundle(tiny_pipeline_config: Path, tiny_trained) -> Path:
    """A tiny exported bundle (FAISS, ONNX, manifest), built once per session."""
    from export.bundle import build_bundle
    from models.config import load_config

    cfg = load_config(tiny_pipeline_config)
    return build_bundle(cfg, tiny_trained, cfg.bundles_dir)


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def server(tiny_bundle: Path) -> Iterator[Server]:
    """The tiny bundle served by uvicorn; fp32 encoder, so results can be compared with
    PyTorch to 1e-4."""
    # No query cache: the tests that compare batched with unbatched answers must encode.
    with Server(
        tiny_bundle.parent,
        WALRUS_ENGINE__ENCODER_PRECISION="fp32",
        WALRUS_LIMITS__HISTORY="50",
        WALRUS_ENGINE__QUERY_CACHE_SIZE="0",
        WALRUS_ENGINE__DEBUG_TIMINGS="true",
    ) as srv:
        srv.wait()
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def served_defaults(tiny_pipeline_config, tiny_trained, tmp_path_factory):
    """The service with its defaults (int8 encoder) on a bundle whose index the export chose
    by size: with `exact_threshold` below the tiny catalog's size, the approximate kind."""
    from export.bundle import build_bundle
    from models.config import load_config

    out = tmp_path_factory.mktemp("ann-bundles")
    cfg = load_config(
        tiny_pipeline_config, ["export.exact_threshold=10", f"export.bundles_dir={out}"]
    )
    bundle = build_bundle(cfg, tiny_trained, out)
    with Server(out) as srv:
        srv.wait()
        yield srv, bundle


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server, one per session (``tests/support/s3.py``)."""
    with S3Server(tmp_path_factory.mktemp("s3")).start() as server:
        yield server


@pytest.fixture
def s3_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<a new bucket>/bundles``, with this process's AWS variables pointing at moto."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.bucket()}/bundles"
