"""bench/gpu_check.py on a CPU machine: the same code paths, every GPU path's CPU fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_the_cpu_fallbacks(tiny_bundle, tmp_path):
    rc = gpu_check.main(
        [
            "--out",
            str(tmp_path),
            "--bundle",
            str(tiny_bundle),
            "--smoke",
            "--sections",
            "env,wals_parity,faiss,onnx,wals_scale",
        ]
    )
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 0, {k: v.get("error") for k, v in result.items() if isinstance(v, dict)}
    assert result["env"]["torch_cuda"] is False
    for kind in ("flat", "ivf"):
        faiss = result["faiss"][kind]
        assert faiss["served_on"] == "cpu"
        assert faiss["recall_at_100"] >= 0.95
        assert faiss["threads"]["mismatches"] == 0 and faiss["threads"]["errors"] == []
        assert faiss["k_above_gpu_limit"]["equal_to_cpu"] is True
    demo = result["onnx"]["demo_encoder"]
    assert demo["fp32_cpu"]["session_providers"] == ["CPUExecutionProvider"]
    assert demo["fp16_cpu"]["min_cosine_vs_cpu_fp32"] > 0.999
    assert result["wals_parity"]["devices"] == ["cpu"]
    assert len(result["wals_scale"]["cpu"]["seconds_per_iteration"]) == 2


def test_a_failing_section_is_recorded_and_the_rest_still_run(tiny_bundle, tmp_path):
    rc = gpu_check.main(
        [
            "--out",
            str(tmp_path),
            "--bundle",
            str(tiny_bundle / "no-such"),
            "--smoke",
            "--sections",
            "env,onnx",
        ]
    )
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 1
    assert result["env"]["ok"] is True
    assert result["onnx"]["ok"] is False and "FileNotFoundError" in result["onnx"]["error"]


def test_the_gpu_tables_in_the_docs_come_from_the_kept_runs():
    runs = sorted((REPO / "docs" / "results" / "gpu-h100").glob("*.json"))
    table = gpu_check.report(runs)
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    missing = [line for line in table.splitlines() if line and line not in docs]
    assert missing == [], missing[:3]
