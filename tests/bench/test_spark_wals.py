"""The Spark benchmark's report is what docs/benchmarks.md shows."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tools import module_or_skip

module_or_skip("pyspark", "pip install -e '.[spark]'")

from bench.spark_wals import report  # noqa: E402 -- after the skip

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_table_is_the_kept_run():
    results = json.loads((REPO / "docs/results/spark-2cpu/spark_wals.json").read_text())
    table = report(results)
    assert table in (REPO / "docs/benchmarks.md").read_text()
    walrus, mllib = results["rows"][0], results["rows"][1]
    assert "walrus" in walrus["engine"] and "MLlib" in mllib["engine"]
    # the claim in docs/scaling.md: walrus-on-Spark per iteration <= MLlib's, shuffling less
    assert walrus["s_per_iter"] <= mllib["s_per_iter"]
    assert walrus["shuffle_bytes_per_iter"] < mllib["shuffle_bytes_per_iter"]
    assert f"{mllib['walrus_spark_ratio']:.2f}" in (REPO / "docs/scaling.md").read_text()
