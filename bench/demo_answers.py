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

from bench.common import write_results
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings

REQUESTS: list[dict[str, Any]] = [
    {"query": "quick vegetarian dinner", "k": 5},
    {"query": "space robots", "k": 5},
    {"user_id": "u0", "k": 5},
]


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
    return {"bundle_id": rec.bundle_id, "u0_seen": seen, "answers": answers}


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
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
