"""The quality benchmark: its split keeps the test set out of every file walrus trains on,
and docs/benchmarks.md shows the kept run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.quality import report, split_movielens

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_table_is_the_kept_run():
    results = json.loads((REPO / "docs/results/quality/quality.json").read_text())
    assert report(results) in (REPO / "docs/benchmarks.md").read_text()
    served = results["results"]["walrus hybrid, served"]
    offline = results["results"]["walrus hybrid, offline"]
    # the served bundle answers as the offline evaluation of the same model does
    assert results["served_equals_offline_share"] > 0.95
    assert abs(served["recall@20"] - offline["recall@20"]) < 0.005


def test_training_files_hold_no_test_pair(movielens_dir, tmp_path):
    split = split_movielens(movielens_dir, tmp_path, seed=0)
    users, items, test = split["users"], split["items"], split["test"].tocoo()
    test_pairs = {(users.ids[u], items.ids[i]) for u, i in zip(test.row, test.col, strict=True)}
    assert len(test_pairs) > 9_000  # a 20% holdout of 48,580 positives
    for name in ("interactions.csv", "queries.csv"):
        frame = pd.read_csv(tmp_path / "data" / name, dtype=str)
        pairs = set(zip(frame["user_id"], frame["item_id"], strict=True))
        assert pairs and not pairs & test_pairs, name
    trained = pd.read_csv(tmp_path / "data" / "interactions.csv", dtype=str)
    assert len(trained) == split["train"].nnz
