"""Parity: the bundle's ONNX models, run as the service runs them, against the references
the export recorded. The export and ``walrus export --verify`` both call this."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from export.format import BundleError, Files, read_manifest, resolve_bundle
from export.runtime.sessions import OnnxHead, OnnxTextEncoder
from export.signing import check_signature, load_public_keys
from models.core.errors import WalrusError


class ParityError(WalrusError):
    """An exported model disagrees with PyTorch beyond tolerance."""


PARITY_TOLERANCES = {"fp32_tolerance": 1e-4, "int8_min_cosine": 0.99, "fp16_min_cosine": 0.999}
"""What ``verify_bundle`` holds every bundle to, and the export's defaults."""


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(1) / np.maximum(na * nb, 1e-12))


def check_parity(
    bundle: Path,
    texts: list[str],
    reference: np.ndarray,
    head_features: np.ndarray,
    head_reference: np.ndarray,
    tolerances: dict[str, float],
) -> dict[str, Any]:
    """Run the bundle's ONNX models as the service does and compare with the references."""
    max_length = json.loads((bundle / Files.TOKENIZER_CONFIG).read_text())["max_length"]

    def encode(precision: str) -> np.ndarray | None:
        path = bundle / Files.ENCODER[precision]
        if not path.is_file():
            return None
        return OnnxTextEncoder(path, bundle / Files.TOKENIZER, max_length).encode(texts)

    fp32_out, int8_out, fp16_out = encode("fp32"), encode("int8"), encode("fp16")
    if fp32_out is None:
        raise BundleError(f"{bundle}: no {Files.ENCODER['fp32']}")
    fp32_diff = float(np.abs(fp32_out - reference).max())
    int8_cos = None if int8_out is None else float(cosine_rows(int8_out, reference).min())
    fp16_cos = None if fp16_out is None else float(cosine_rows(fp16_out, reference).min())
    head_diff = float(
        np.abs(OnnxHead(bundle / Files.HEAD).score(head_features) - head_reference).max()
    )
    fp32_tol, int8_min, fp16_min = (
        tolerances["fp32_tolerance"],
        tolerances["int8_min_cosine"],
        tolerances["fp16_min_cosine"],
    )
    absent = [
        Files.ENCODER[p] for p, out in (("int8", int8_out), ("fp16", fp16_out)) if out is None
    ]
    figures = {
        "encoder_fp32_max_abs_diff": fp32_diff,
        "not_checked": [f"{name} (not in the bundle)" for name in absent],
        "encoder_int8_min_cosine": int8_cos,
        "encoder_fp16_min_cosine": fp16_cos,
        "head_max_abs_diff": head_diff,
        "texts": len(texts),
        **tolerances,
    }
    problems = []
    if fp32_diff > fp32_tol:
        problems.append(f"encoder fp32 max abs diff {fp32_diff:.2e} > {fp32_tol:.0e}")
    if int8_cos is not None and int8_cos < int8_min:
        problems.append(f"encoder int8 min cosine {int8_cos:.4f} < {int8_min}")
    if fp16_cos is not None and fp16_cos < fp16_min:
        problems.append(f"encoder fp16 min cosine {fp16_cos:.5f} < {fp16_min}")
    if head_diff > fp32_tol:
        problems.append(f"head max abs diff {head_diff:.2e} > {fp32_tol:.0e}")
    if problems:
        raise ParityError("parity failed: " + "; ".join(problems))
    return figures


def verify_bundle(path: str | Path, trusted_keys: Path | None = None) -> dict[str, Any]:
    """Re-check the signature (with ``trusted_keys``), every checksum and the parity
    figures; ``BundleError`` or ``ParityError`` with one line on failure. Returns the
    recomputed figures."""
    bundle = resolve_bundle(path)
    signer = (
        None if trusted_keys is None else check_signature(bundle, load_public_keys(trusted_keys))
    )
    manifest = read_manifest(bundle)
    texts = json.loads((bundle / Files.PARITY_TEXTS).read_text())
    reference = np.load(bundle / Files.PARITY_ENCODER)
    features = np.load(bundle / Files.PARITY_HEAD_FEATURES)
    head_reference = np.load(bundle / Files.PARITY_HEAD)
    # The tolerances are walrus' own, never the manifest's: a manifest cannot vouch for itself.
    figures = check_parity(bundle, texts, reference, features, head_reference, PARITY_TOLERANCES)
    return {
        "bundle_id": manifest.bundle_id,
        "files": len(manifest.files),
        "signed_by": signer,
        "parity": figures,
    }
