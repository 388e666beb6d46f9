"""The README's demo answers are the kept run's, and the script that keeps them works."""

from __future__ import annotations

import json
from pathlib import Path

from bench.demo_answers import REQUESTS, ask, report

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_table_is_the_kept_run():
    kept = json.loads((REPO / "docs/results/demo/answers.json").read_text())
    assert report(kept) in (REPO / "README.md").read_text()
    assert [a["request"] for a in kept["answers"]] == REQUESTS


def test_ask_answers_every_request_from_a_bundle(tiny_bundle):
    result = ask(tiny_bundle)
    assert result["bundle_id"] == tiny_bundle.name
    for answer in result["answers"]:
        assert len(answer["items"]) == 5
        assert all(set(i["sources"]) <= {"wals", "text"} and i["sources"] for i in answer["items"])
    table = report(result)
    assert table.count("\n") == 1 + len(REQUESTS)
