"""The API benchmark, short: both measurements run and the kept way is the faster one in
the kept run; the docs' tables are that run's."""

from __future__ import annotations

import json
from pathlib import Path

from bench.api import main, table

REPO = Path(__file__).resolve().parents[2]
KEPT = REPO / "docs/results/api/api.json"


def test_a_short_run_measures_both_ways(monkeypatch, tmp_path):
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    old = tmp_path / "schemas.py"
    old.write_text(  # a stand-in for the old pydantic schemas: the same field names
        "from pydantic import BaseModel, ConfigDict\n"
        "class RecommendRequest(BaseModel):\n"
        "    model_config = ConfigDict(extra='allow')\n"
    )
    assert main(["--repeat", "50", "--pydantic-schemas", str(old)]) == 0
    result = json.loads((tmp_path / "api.json").read_text())
    assert {row["body"] for row in result["decoding"]} == {"user", "query", "rules"}
    assert all(row["pydantic_us"] > 0 and row["msgspec_us"] > 0 for row in result["decoding"])
    assert [row["k"] for row in result["answering"]] == [10, 100]
    assert "| user |" in table(result)


def test_the_docs_tables_are_the_kept_run_and_the_kept_ways_are_faster():
    kept = json.loads(KEPT.read_text())
    assert kept["pydantic_schemas"], "the kept run compares against the old pydantic schemas"
    assert all(row["pydantic_over_msgspec"] >= 1.0 for row in kept["decoding"])
    assert all(row["ratio"] > 1.0 for row in kept["answering"])
    assert table(kept) in (REPO / "docs/benchmarks.md").read_text()
