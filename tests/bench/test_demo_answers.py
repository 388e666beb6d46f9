"""The README's demo answers are the kept run's, and the script that keeps them works."""

from __future__ import annotations

import json
from pathlib import Path

from bench.demo_answers import REQUESTS, RULES, ask, report, rules_report

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_table_is_the_kept_run():
    kept = json.loads((REPO / "docs/results/demo/answers.json").read_text())
    assert report(kept) in (REPO / "README.md").read_text()
    assert rules_report(kept) in (REPO / "README.md").read_text()
    assert [a["request"] for a in kept["answers"]] == REQUESTS
    assert kept["rules"]["request"] == RULES


def fits(result: dict) -> None:
    """The rules answer keeps to its request: k items, each passing the filter, the cap
    held, the explanation adding up."""
    items = result["rules"]["answer"]["items"]
    assert len(items) == RULES["k"]
    for item in items:
        a = item["attributes"]
        assert a["topic"] in RULES["filter"]["topic"]["in"] and a["in_stock"] is True
        assert a["price"] < RULES["filter"]["price"]["lt"]
        e = item["explanation"]
        terms = sum(c["score"] for c in e["because"]) + e["other_terms"] + e["rest"]
        assert abs(terms - e["wals_score"]) < 1e-5
    topics = [i["attributes"]["topic"] for i in items]
    assert max(topics.count(t) for t in topics) <= RULES["diversity"]["max_per_value"]


def test_the_kept_rules_answer_fits_its_request():
    fits(json.loads((REPO / "docs/results/demo/answers.json").read_text()))


def test_ask_answers_every_request_from_a_bundle(tiny_bundle):
    result = ask(tiny_bundle)
    assert result["bundle_id"] == tiny_bundle.name
    for answer in result["answers"]:
        assert len(answer["items"]) == 5
        assert all(set(i["sources"]) <= {"wals", "text"} and i["sources"] for i in answer["items"])
    table = report(result)
    assert table.count("\n") == 1 + len(REQUESTS)
    fits(result)
