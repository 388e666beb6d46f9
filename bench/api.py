"""One definition of the API: what each way of writing it costs a front per request.

Two choices, each measured side by side in one run (docs/benchmarks.md, "One definition of
the API"):

1. **Decoding a request body.** The kept way: ``service.api.decode`` (the JSON reader, then
   ``msgspec.convert`` into the public type, which checks every field). Against it, with
   ``--pydantic-schemas FILE``: the pydantic models the service had before (for example
   ``git show 1ec135e:service/schemas.py > /tmp/schemas.py``), validating the same bytes
   as FastAPI did (the JSON reader, then ``model_validate``).
2. **Answering.** The kept way: the engine writes the result's JSON once and the front
   forwards it (``Answer.body``). Against it: the engine sends the result as msgpack, and
   the front decodes it into the public type and writes the JSON itself.

Run: ``python -m bench.api [--pydantic-schemas FILE]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from bench.common import Benchmark, median_ms
from service.api import Item, Recommendations, RecommendRequest, decode
from service.messages import Answer, decode_answer, encode, json_body

BODIES: dict[str, dict[str, Any]] = {
    "user": {"user_id": "u1", "k": 10},
    "query": {"query": "space robots on a long journey", "k": 10},
    "rules": {
        "user_id": "u1",
        "k": 10,
        "offset": 10,
        "history": [f"i{i}" for i in range(20)],
        "filter": {"year": {"gte": 1990, "lt": 2000}, "in_stock": {"eq": True}},
        "diversity": {"field": "topic", "max_per_value": 2},
    },
}
REPEAT = 20_000


def result(k: int) -> Recommendations:
    items = [Item(f"i{i}", f"A title {i}", 1.0 / (i + 1), ["wals", "text"]) for i in range(k)]
    rec_id = "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"
    return Recommendations(items, True, "20261207-000000-abcdef", rec_id, "control", {}, [])


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_schemas", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: --pydantic-schemas: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its annotations are resolved by module name
    spec.loader.exec_module(module)
    return module


def fastapi_way(model: Any, raw: bytes) -> object:
    return model.model_validate(json.loads(raw))


def decoding(old: ModuleType | None, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name, body in BODIES.items():
        raw = json.dumps(body).encode()
        row: dict[str, Any] = {
            "body": name,
            "bytes": len(raw),
            "msgspec_us": median_ms(partial(decode, raw, RecommendRequest), repeat, 500) * 1e3,
        }
        if old is not None:
            # As FastAPI did it: Starlette's JSON reader, then the model's validation.
            validate = partial(fastapi_way, old.RecommendRequest, raw)
            row["pydantic_us"] = median_ms(validate, repeat, 500) * 1e3
            row["pydantic_over_msgspec"] = row["pydantic_us"] / row["msgspec_us"]
        rows.append(row)
    return rows


def forward(frame: bytes) -> bytes:
    """The kept way: the front takes the engine's JSON out of its answer."""
    return decode_answer(frame).body


def write(frame: bytes) -> bytes:
    """The other way: the front decodes the typed result and writes its JSON."""
    return json_body(msgspec.msgpack.decode(frame, type=Recommendations))


def answering(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for k in (10, 100):
        answered = result(k)
        forwarded = encode(Answer(1, json_body(answered)))
        typed = msgspec.msgpack.encode(answered)

        front_forwards = partial(forward, forwarded)
        front_writes = partial(write, typed)
        assert front_forwards() == front_writes()  # the same bytes reach the client
        once = median_ms(front_forwards, repeat, 500) * 1e3
        twice = median_ms(front_writes, repeat, 500) * 1e3
        rows.append(
            {
                "k": k,
                "forward_us": once,
                "decode_and_write_us": twice,
                "ratio": twice / once,
            }
        )
    return rows


def table(r: dict[str, Any]) -> str:
    """The docs' tables (docs/benchmarks.md, "One definition of the API")."""
    lines = [
        "| body | bytes | msgspec (kept), µs | pydantic (FastAPI's way), µs | pydantic ÷ msgspec |",
        "|---|---|---|---|---|",
    ]
    for row in r["decoding"]:
        lines.append(
            f"| {row['body']} | {row['bytes']} | {row['msgspec_us']:.1f} | "
            f"{row.get('pydantic_us', float('nan')):.1f} | "
            f"{row.get('pydantic_over_msgspec', float('nan')):.2f} |"
        )
    lines += [
        "",
        "| items | front forwards the engine's JSON (kept), µs | front decodes and writes it, µs "
        "| ratio |",
        "|---|---|---|---|",
    ]
    for row in r["answering"]:
        lines.append(
            f"| {row['k']} | {row['forward_us']:.2f} | {row['decode_and_write_us']:.2f} | "
            f"{row['ratio']:.1f}× |"
        )
    return "\n".join(lines)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pydantic-schemas", type=Path, help="the old service/schemas.py")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="timed calls per cell")


def run(args: argparse.Namespace) -> dict[str, Any]:
    old = load(args.pydantic_schemas) if args.pydantic_schemas else None
    return {
        "repeat": args.repeat,
        "pydantic_schemas": str(args.pydantic_schemas) if old is not None else None,
        "decoding": decoding(old, args.repeat),
        "answering": answering(args.repeat),
    }


BENCHMARK = Benchmark("api", __doc__ or "", arguments, run, table)
main = BENCHMARK.main

if __name__ == "__main__":
    raise SystemExit(main())
