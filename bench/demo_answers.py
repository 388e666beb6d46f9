"""What the demo bundle answers: the README's table, printed from a kept run.

Asks the engine (``service.engine.recommender.Recommender``, what ``walrus serve`` runs)
the README's three requests against ``make demo``'s bundle and writes the answers; the
README's table is ``report()`` of the kept JSON (a test compares them).

    python -m bench.demo_answers --bundle artifacts/demo/bundles
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec

from bench.common import write_results
from service.api import Diversity
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings

REQUESTS: list[dict[str, Any]] = [
    {"query": "quick vegetarian dinner", "k": 5},
    {"query": "space robots", "k": 5},
    {"user_id": "u0", "k": 5},
]
RULES: dict[str, Any] = {
    "user_id": "u0",
    "k": 3,
    "offset": 3,
    "filter": {
        "topic": {"in": ["cooking", "space"]},
        "in_stock": {"eq": True},
        "price": {"lt": 15},
    },
    "diversity": {"field": "topic", "max_per_value": 3},
    "explain": True,
}
"""The README's business-rules example: the second page of a filtered, capped, explained
answer."""


def ask(bundle: Path) -> dict[str, Any]:
    rec = Recommender(bundle, Settings(bundle=bundle))
    answers = []
    for body in REQUESTS:
        got = rec.recommend(Recommend(**body))
        answers.append(
            {
                "request": body,
                "items": [{"title": i.title, "sources": i.sources} for i in got.items],
            }
        )
    seen = len(rec.seen(rec.users.index("u0"))) if "u0" in rec.users else 0
    return {
        "bundle_id": rec.bundle_id,
        "u0_seen": seen,
        "answers": answers,
        "rules": ask_rules(rec),
    }


def ask_rules(rec: Recommender) -> dict[str, Any]:
    """``RULES`` as the service answers it, with each item's attributes (to check the
    answer against the catalog)."""
    body = {**RULES, "diversity": Diversity(**RULES["diversity"])}
    got = msgspec.to_builtins(rec.recommend(Recommend(**body)))
    columns = rec.bundle.attributes.columns
    for item in got["items"]:
        i = rec.items.index(item["item_id"])
        item["attributes"] = {
            name: value(col, i) for name, col in columns.items() if name in RULES["filter"]
        }
    return {"request": RULES, "answer": {k: got[k] for k in ("items", "warnings")}}


def value(column: Any, i: int) -> Any:
    if column.kind == "numeric":
        return float(column.numbers[i])
    if column.kind == "boolean":
        return bool(column.codes[i] == 1)
    return column.values[column.codes[i]] if column.codes[i] >= 0 else None


def rules_report(result: dict[str, Any]) -> str:
    """The README's request and answer, as JSON."""
    rules = result["rules"]
    items = ",\n  ".join(json.dumps(item) for item in rules["answer"]["items"])
    warnings = json.dumps(rules["answer"]["warnings"])
    return (
        f"```json\n{json.dumps(rules['request'])}\n```\n\n"
        f'```json\n{{"items": [\n  {items}\n ],\n "warnings": {warnings}}}\n```'
    )


def report(result: dict[str, Any]) -> str:
    lines = ["| request | top 5 (title, sources) |", "|---|---|"]
    for answer in result["answers"]:
        request = json.dumps({k: v for k, v in answer["request"].items() if k != "k"})
        if "user_id" in answer["request"]:
            request = f"`{request}` ({result['u0_seen']} items seen)"
        else:
            request = f"`{request}`"
        items = " · ".join(f"{i['title']} ({'+'.join(i['sources'])})" for i in answer["items"])
        lines.append(f"| {request} | {items} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path("artifacts/demo/bundles"))
    args = ap.parse_args(argv)
    result = ask(args.bundle)
    path = write_results("demo_answers", result)
    print(report(result))
    print(rules_report(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
