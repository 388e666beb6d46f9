"""The live-catalog benchmark, short (the tiny bundle): the new version costs only its
changed files, no answer holds a withdrawn item; the docs table is the kept run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.update import main, table
from tests.support.bundles import bundles_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_run_costs_the_changed_files_only(monkeypatch, tiny_bundle, tmp_path):
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    (tmp_path / "seed").mkdir()
    seed = bundles_of(tiny_bundle, tmp_path / "seed")
    args = ["--seed-bundles", str(seed), "--work", str(tmp_path / "work")]
    assert main([*args, "--add", "5", "--remove", "5"]) == 0
    result = json.loads((tmp_path / "update.json").read_text())
    assert result["withdrawn_in_answers"] == 0 and result["answers_checked"] > 50
    assert result["own_bytes"] <= result["changed_files_bytes"] < result["bundle_bytes"]
    assert "user_factors.npy" not in result["changed_files"]
    assert "item_factors.npy" in result["changed_files"]
    assert (tmp_path / "update.png").is_file()


def test_the_docs_table_is_the_kept_run():
    kept = json.loads((REPO / "docs/results/update-2cpu/update.json").read_text())
    assert kept["items"] == 500_000 and kept["added"] == kept["withdrawn"] == 1000
    assert kept["update_s"] <= kept["target_s"] and kept["withdrawn_in_answers"] == 0
    assert kept["own_bytes"] <= kept["changed_files_bytes"]
    assert table(kept) in (REPO / "docs/benchmarks.md").read_text()
    # the prose beside the table quotes the same run
    text = (REPO / "docs/benchmarks.md").read_text()
    assert f"{kept['update_s']:.0f} s against the {kept['target_s']:.0f} s goal" in text
    assert f"The compaction, {kept['compact_s']:.0f} s," in text
    assert f"{kept['added_found_by_title']:.0%} of the added items were in the top" in text


def test_the_docs_events_table_is_the_kept_run():
    from bench.events_cost import table as events_table

    kept = json.loads((REPO / "docs/results/events-2cpu/events_cost.json").read_text())
    rps = kept["requests_per_s"]
    assert kept["rounds"] >= 3 and kept["ratio"] == pytest.approx(rps["events"] / rps["off"])
    assert kept["attribution_ratio"] == pytest.approx(rps["attribution"] / rps["events"])
    assert events_table(kept) in (REPO / "docs/benchmarks.md").read_text()
