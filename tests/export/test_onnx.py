"""The default encoder (all-MiniLM-L6-v2, a BERT model) through the real export: fp32 parity
with PyTorch, and the int8 ladder's fallback, which only real weights need."""

from __future__ import annotations

import numpy as np
import pytest

from export.bundle import quantize_to_target, write_tokenizer
from export.onnx import export_encoder
from export.runtime import OnnxTextEncoder, cosine_rows
from models.encoder import DEFAULT_ENCODER, TextEncoder

TEXTS = [
    "space robots",
    "a quick vegetarian dinner",
    "jazz piano at night",
    "The detective follows the river to the old castle where the ghost story began.",
    "comedy",
    "an epic war drama about family, love and the future of the planet",
] * 3


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm")
    encoder = TextEncoder.load(DEFAULT_ENCODER, max_length=64)
    write_tokenizer(encoder, out)
    export_encoder(encoder, out / "encoder.onnx")
    return encoder, out, encoder.encode(TEXTS)


@pytest.mark.slow
def test_minilm_fp32_onnx_matches_pytorch(minilm):
    _, out, reference = minilm
    onnx_out = OnnxTextEncoder(out / "encoder.onnx", out / "tokenizer.json", 64).encode(TEXTS)
    assert np.abs(onnx_out - reference).max() <= 1e-4


@pytest.mark.slow
def test_minilm_int8_ladder_falls_back_to_the_second_scheme(minilm):
    _, out, reference = minilm
    from export.onnx import quantize_encoder

    figures = {}
    for scheme in ("ffn_down_fp32", "ffn_fp32"):
        quantize_encoder(out / "encoder.onnx", out / f"{scheme}.onnx", scheme)
        enc = OnnxTextEncoder(out / f"{scheme}.onnx", out / "tokenizer.json", 64)
        figures[scheme] = float(cosine_rows(enc.encode(TEXTS), reference).min())
    assert figures["ffn_down_fp32"] < figures["ffn_fp32"]
    target = (figures["ffn_down_fp32"] + figures["ffn_fp32"]) / 2
    assert quantize_to_target(out, TEXTS, reference, 64, target) == "ffn_fp32"
    assert (
        quantize_to_target(out, TEXTS, reference, 64, figures["ffn_down_fp32"]) == "ffn_down_fp32"
    )
