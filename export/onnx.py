"""ONNX export of the text encoder (pooling and normalisation inside the graph), its
dynamically int8-quantised copy, and the score head; with parity checks that fail loudly.

The legacy TorchScript exporter (``dynamo=False``) is used on purpose: on torch 2.13 it
exports RoBERTa and BERT with dynamic batch and length and matches torch to ~1e-6, while
the dynamo exporter writes external-data files and renames outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from export.runtime import ParityError, load_tokenizer

if TYPE_CHECKING:
    from models.encoder import TextEncoder
    from models.head import ScoreHead

ENCODER_OUTPUT = "sentence_embedding"  # not "embedding": the exporter uses that name inside


def export_encoder(encoder: TextEncoder, path: Path, opset: int = 17) -> None:
    """Write the pooled encoder: inputs ``input_ids``, ``attention_mask`` (int64, dynamic
    batch and length), output ``sentence_embedding`` (batch, dim) unit vectors."""
    sample = encoder.tokenize(["a short text", "a somewhat longer second text to pad"])
    module = encoder.module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer notices of the legacy exporter
        torch.onnx.export(
            module,
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[ENCODER_OUTPUT],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                ENCODER_OUTPUT: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


QUANTIZATION_SCHEMES = ("ffn_down_fp32", "ffn_fp32")
"""Tried in order, fastest first; the export keeps the first that meets the parity target.
The FFN projections carry the activation outliers of BERT/RoBERTa-style layers, so keeping
them in fp32 buys accuracy; `bench/quantization.py` measures every variant."""


def fp32_nodes(fp32_path: Path, scheme: str) -> list[str]:
    """The MatMul nodes ``scheme`` keeps in fp32, found by the exporter's node names. One per
    layer for ``ffn_down_fp32``, two for ``ffn_fp32``; a name change in the exporter would
    otherwise silently keep nothing, so that raises ``ParityError``."""
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    names = [n.name for n in graph.node]
    down = [n for n in names if n.endswith("/output/dense/MatMul") and "attention" not in n]
    up = [n for n in names if "/intermediate/dense/" in n and n.endswith("MatMul")]
    if not down or len(down) != len(up):
        raise ParityError(
            f"{fp32_path.name}: found {len(down)} FFN down- and {len(up)} up-projection MatMuls "
            "by name; the exporter's node names changed, so the int8 schemes cannot apply"
        )
    return down if scheme == "ffn_down_fp32" else down + up


def quantize_encoder(fp32_path: Path, int8_path: Path, scheme: str = "ffn_down_fp32") -> None:
    """Dynamic int8 quantisation of the weights (per channel), activations stay float;
    ``scheme`` names which MatMuls of BERT/RoBERTa-style layers stay in fp32."""
    if scheme not in QUANTIZATION_SCHEMES:
        raise ValueError(f"unknown quantisation scheme {scheme!r}: use {QUANTIZATION_SCHEMES}")
    exclude = fp32_nodes(fp32_path, scheme)
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=exclude,
    )


def convert_to_fp16(fp32_path: Path, fp16_path: Path) -> None:
    """A float16 copy of the encoder for GPUs, inputs and output kept int64 / float32.

    Dynamic int8 (MatMulInteger) has no CUDA kernels in onnxruntime: on the CUDA provider an
    int8 encoder runs largely on the CPU. GPUs serve this copy instead."""
    model = onnx.load(str(fp32_path))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(fp16_path))


def export_head(head: ScoreHead, path: Path, opset: int = 17) -> None:
    """Input ``features`` (batch, n_features) float32, output ``score`` (batch,)."""
    module = head.torch_module()
    sample = torch.zeros(2, head.n_features)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            input_names=["features"],
            output_names=["score"],
            dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def check_tokenizer_parity(encoder: TextEncoder, tokenizer_path: Path, texts: list[str]) -> None:
    """The ``tokenizers`` library (what the service runs) must produce the same ids and masks
    as the Hugging Face tokenizer used in training."""
    tokenizer = load_tokenizer(
        tokenizer_path,
        encoder.max_length,
        int(encoder.tokenizer.pad_token_id),
        str(encoder.tokenizer.pad_token),
    )
    batch = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    ref = encoder.tokenize(texts)
    if not (
        np.array_equal(ids, ref["input_ids"].cpu().numpy())
        and np.array_equal(mask, ref["attention_mask"].cpu().numpy())
    ):
        raise ParityError("tokenizer.json tokenises differently from the training tokenizer")
