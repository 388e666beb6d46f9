"""What the benchmarks on `walrus tune`'s validation split share (bench.levers,
bench.signals): their command line and their data. Kept apart from bench.common, which every
benchmark imports, because the data half loads the training stack (torch)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.config import PipelineConfig, load_config
from models.data.dataset import Dataset
from models.data.splits import Split
from models.pipeline import load_dataset, observed
from models.tuning import validation_split


def config_or_report(
    argv: list[str] | None, doc: str, report: Callable[[dict[str, Any]], str]
) -> Path | None:
    """The ``--config`` a benchmark on `walrus tune`'s validation split runs with, or
    ``None`` once ``--report`` has printed a kept result's table instead."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("configs/movielens.toml"))
    ap.add_argument("--report", type=Path, help="only print the table of a JSON result")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return None
    return Path(args.config)


def validation_data(config: Path) -> tuple[PipelineConfig, Dataset, Split]:
    """The config at ``config``, its dataset, and the validation split `walrus tune` scores
    its trials on."""
    cfg = load_config(config)
    dataset = load_dataset(cfg.data)
    return cfg, dataset, validation_split(observed(dataset), cfg)
