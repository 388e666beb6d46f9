"""The filters benchmark, short: every filtered pool holds only passing items and finds what
the exact filtered search finds; the docs table is the kept run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.filters import main, table

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_run_keeps_every_pool_to_its_filter(monkeypatch, tmp_path):
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    assert main(["--items", "100000", "--rounds", "2"]) == 0
    result = json.loads((tmp_path / "filters.json").read_text())
    rows = {row["filter"]: row for row in result["rows"]}
    assert result["index"].startswith("IVF")  # the export's choice at this size
    assert all(row["only_passing"] for row in rows.values())
    # a filter costs no recall: the index is widened, or the passing items ranked exactly
    assert all(row["pool_recall"] >= rows["none"]["pool_recall"] - 0.02 for row in rows.values())
    assert rows["none"]["pool_recall"] >= 0.9
    assert rows["about 0.1%"]["exact_ranking"] and not rows["about 50%"]["exact_ranking"]
    assert (tmp_path / "filters.png").is_file()


def test_the_docs_table_is_the_kept_run():
    kept = json.loads((REPO / "docs/results/filters-2cpu/filters.json").read_text())
    assert kept["items"] == 500_000 and all(r["only_passing"] for r in kept["rows"])
    assert max(r["bitmap_ms"] for r in kept["rows"]) <= kept["target_bitmap_ms"]
    assert table(kept) in (REPO / "docs/benchmarks.md").read_text()
    rows = {row["filter"]: row for row in kept["rows"]}
    inside, after = rows["about 50%, inside the index"], rows["about 50%"]
    quoted = (
        f"costs {inside['pool_ms_per_request']:.2f} ms per request against\n"
        f"{after['pool_ms_per_request']:.2f} ms"
    )
    assert quoted in (REPO / "docs/benchmarks.md").read_text()
