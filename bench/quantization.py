"""The encoder quantisation table of docs/benchmarks.md, measured: every int8 variant of the
default encoder (all-MiniLM-L6-v2) against PyTorch, and its speed on one short query.

    python -m bench.quantization          # or: make bench-quantization

Writes bench/results/quantization.json and prints the table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench.common import print_table, write_results
from export.bundle import write_tokenizer
from export.onnx import QUANTIZATION_SCHEMES, export_encoder, quantize_encoder
from export.runtime import OnnxTextEncoder, cosine_rows
from models.data.synthetic import SIZES, generate
from models.encoder import DEFAULT_ENCODER, TextEncoder


def ms_per_query(encoder: OnnxTextEncoder, query: str, repeat: int = 200) -> float:
    for _ in range(20):
        encoder.encode([query])
    start = time.perf_counter()
    for _ in range(repeat):
        encoder.encode([query])
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> int:
    _, catalog = generate(SIZES["small"], seed=0)
    texts = catalog["title"].astype(str).tolist()[:32]
    encoder = TextEncoder.load(DEFAULT_ENCODER, max_length=64)
    reference = encoder.encode(texts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_tokenizer(encoder, out)
        export_encoder(encoder, out / "fp32.onnx")
        variants = {"fp32 ONNX": out / "fp32.onnx"}
        for name, per_channel in (("int8, per tensor", False), ("int8, per channel", True)):
            path = out / f"{name.replace(' ', '_').replace(',', '')}.onnx"
            quantize_dynamic(
                str(out / "fp32.onnx"),
                str(path),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
            )
            variants[name] = path
        for scheme in QUANTIZATION_SCHEMES:
            quantize_encoder(out / "fp32.onnx", out / f"{scheme}.onnx", scheme)
            variants[f"int8, per channel, {scheme}"] = out / f"{scheme}.onnx"
        for name, path in variants.items():
            onnx = OnnxTextEncoder(path, out / "tokenizer.json", 64, threads=1)
            emb = onnx.encode(texts)
            rows.append(
                {
                    "variant": name,
                    "min_cosine": float(cosine_rows(emb, reference).min()),
                    "max_abs_diff": float(np.abs(emb - reference).max()),
                    "ms_per_query": ms_per_query(onnx, "space robots"),
                }
            )
    print_table(
        "encoder quantisation: all-MiniLM-L6-v2, 32 texts, 1 thread, one query",
        rows,
        ["variant", "min_cosine", "max_abs_diff", "ms_per_query"],
    )
    payload = {"texts": len(texts), "rows": rows}
    path = write_results("quantization", payload)
    print(report(payload))
    print(f"wrote {path}")
    return 0


def report(result: dict[str, Any]) -> str:
    """The table docs/benchmarks.md shows (a test compares them), speed as a ratio to fp32
    measured in the same run."""
    fp32 = next(r["ms_per_query"] for r in result["rows"] if r["variant"] == "fp32 ONNX")
    lines = [
        "| variant | min cosine to PyTorch | max abs diff | ms / query | ÷ fp32 |",
        "|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {r['min_cosine']:.4f} | {r['max_abs_diff']:.4f} "
            f"| {r['ms_per_query']:.2f} | {r['ms_per_query'] / fp32:.2f} |"
            for r in result["rows"]
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
