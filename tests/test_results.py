"""Kept results say when they went stale: each records the product source files its
benchmark ran (``bench.common.provenance``); once one of them changes, every docs page that
prints the result must say so, in the words ``bench.common.stale_note`` prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import REPO, provenance, stale, stale_note

KEPT = sorted((REPO / "docs" / "results").rglob("*.json"))
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def recorded() -> list[Path]:
    return [p for p in KEPT if "provenance" in json.loads(p.read_text())]


def citing(result: Path) -> list[Path]:
    name = str(result.relative_to(REPO))
    return [page for page in PAGES if name in page.read_text()]


@pytest.mark.parametrize("result", recorded(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_stale_result_is_marked_stale_wherever_it_is_printed(result):
    kept = json.loads(result.read_text())
    pages = citing(result)
    assert pages, f"{result.relative_to(REPO)}: no docs page names it"
    changed = stale(kept)
    for page in pages:
        marked = stale_note(kept) in page.read_text()
        assert marked == bool(changed), (
            f"{page.name} prints {result.name}: "
            + (f"mark it '{stale_note(kept)}' ({', '.join(changed)} changed)" if changed else "")
            + ("" if changed else "it is current: remove the stale mark")
        )


def test_the_record_names_what_ran_and_sees_a_change(tmp_path, monkeypatch):
    import bench.common
    import service.api  # noqa: F401 - a product module the record must list

    record = {"provenance": provenance()}
    assert "service/api.py" in record["provenance"]["sources"]
    assert stale(record) == []
    record["provenance"]["sources"]["service/api.py"] = "0" * 16  # as if the code changed
    assert stale(record) == ["service/api.py"]
    record["provenance"]["sources"]["service/gone.py"] = "0" * 16
    assert "service/gone.py" in stale(record)
    assert bench.common.stale_note(record).startswith("measured at commit ")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_docs_tables_are_printed_from_their_kept_results(page):
    """Every region between ``<!-- kept: ... -->`` markers is what ``bench.results`` prints
    for that kept result now (``python -m bench.results --write`` rewrites them)."""
    from bench.results import rendered

    text = page.read_text()
    assert rendered(text) == text, f"{page.name}: run python -m bench.results --write"


def test_a_registered_result_is_printed_somewhere():
    from bench.results import RUNS, TABLES, regions

    printed = {path for page in PAGES for path in regions(page)}
    assert set(TABLES) <= printed
    assert {kept for _, kept, _ in RUNS.values()} <= set(TABLES)
