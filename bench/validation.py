"""What the benchmarks on `walrus tune`'s validation split share (bench.levers,
bench.signals): their command line and their data. Kept apart from bench.common, which every
benchmark imports, because the data half loads the training stack (torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.config import PipelineConfig, load_config
from models.data.dataset import Dataset
from models.data.splits import Split
from models.pipeline import load_dataset, observed
from models.tuning import validation_split


def config_argument(ap: argparse.ArgumentParser) -> None:
    """The ``--config`` a benchmark on `walrus tune`'s validation split runs with."""
    ap.add_argument("--config", type=Path, default=Path("configs/movielens.toml"))


def validation_data(config: Path) -> tuple[PipelineConfig, Dataset, Split]:
    """The config at ``config``, its dataset, and the validation split `walrus tune` scores
    its trials on."""
    cfg = load_config(config)
    dataset = load_dataset(cfg.data)
    return cfg, dataset, validation_split(observed(dataset), cfg)
