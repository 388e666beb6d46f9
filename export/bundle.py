"""The export bundle: a versioned directory the service loads, written atomically.

Layout (all paths relative to the bundle; ``manifest.json`` lists each with its sha256)::

    manifest.json                 format version, ids, dims, versions, parity, index figures
    user_ids.json item_ids.json   id maps (index order)
    items.json                    per item: item_id, title, popularity
    user_factors.npy              (n_users, wals_dim), memory-mappable
    item_factors.npy              (n_items, wals_dim) served factors: cold items ridge-mapped
    wals_item_factors.npy         (n_items, wals_dim) as WALS fitted them: fold-in solves here
    item_gramian.npy col_weights.npy  fold-in's Gramian and column weights
    seen_indptr.npy seen_indices.npy  each user's training items (CSR)
    item_text_embeddings.npy item_log_popularity.npy
    wals.faiss text.faiss         inner-product indexes (CPU format)
    encoder.onnx encoder.int8.onnx encoder.fp16.onnx head.onnx tokenizer.json tokenizer_config.json
    parity/                       texts and PyTorch reference outputs for ``--verify``

Bundles live in ``BUNDLES/<bundle_id>/``; ``BUNDLES/current`` is a symlink switched
atomically once a bundle is complete, so a reader never sees a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.faiss_index import IndexConfig, ann_recall, build_index
from export.manifest import (
    CURRENT,
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    file_table,
    read_manifest,
)
from export.onnx import (
    QUANTIZATION_SCHEMES,
    ParityError,
    check_tokenizer_parity,
    convert_to_fp16,
    cosine_rows,
    export_encoder,
    export_head,
    quantize_encoder,
)
from models.artifacts import atomic_directory

if TYPE_CHECKING:
    from models.config import PipelineConfig
    from models.encoder import TextEncoder
    from models.training import TrainedArtifacts

log = logging.getLogger(__name__)
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "faiss-cpu",
    "numpy",
    "scipy",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def parity_texts(texts: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample of item texts plus short query-like and over-long texts, so parity
    covers padding, truncation and single words."""
    rng = np.random.default_rng(seed)
    picked = [texts[int(i)] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
    words = " ".join(picked).split()
    extra = [
        words[0] if words else "a",
        " ".join(words[:3]),
        " ".join(words * 3)[:2000],
    ]
    return [t for t in picked + extra if t.strip()]


def check_parity(
    bundle: Path,
    texts: list[str],
    reference: np.ndarray,
    head_features: np.ndarray,
    head_reference: np.ndarray,
    cfg: Any,
) -> dict[str, Any]:
    """Run the bundle's ONNX models as the service does and compare with the references."""
    from service.runtime import OnnxHead, OnnxTextEncoder

    tokenizer_cfg = json.loads((bundle / "tokenizer_config.json").read_text())
    fp32 = OnnxTextEncoder(
        bundle / "encoder.onnx", bundle / "tokenizer.json", tokenizer_cfg["max_length"]
    )
    fp32_diff = float(np.abs(fp32.encode(texts) - reference).max())
    int8_cos = None
    if (bundle / "encoder.int8.onnx").is_file():
        int8 = OnnxTextEncoder(
            bundle / "encoder.int8.onnx", bundle / "tokenizer.json", tokenizer_cfg["max_length"]
        )
        int8_cos = float(cosine_rows(int8.encode(texts), reference).min())
    fp16_cos = None
    if (bundle / "encoder.fp16.onnx").is_file():
        fp16 = OnnxTextEncoder(
            bundle / "encoder.fp16.onnx", bundle / "tokenizer.json", tokenizer_cfg["max_length"]
        )
        fp16_cos = float(cosine_rows(fp16.encode(texts), reference).min())
    head_diff = float(
        np.abs(OnnxHead(bundle / "head.onnx").score(head_features) - head_reference).max()
    )
    figures = {
        "encoder_fp32_max_abs_diff": fp32_diff,
        "encoder_int8_min_cosine": int8_cos,
        "encoder_fp16_min_cosine": fp16_cos,
        "head_max_abs_diff": head_diff,
        "texts": len(texts),
        "fp32_tolerance": cfg["fp32_tolerance"],
        "int8_min_cosine": cfg["int8_min_cosine"],
        "fp16_min_cosine": cfg.get("fp16_min_cosine", 0.999),
    }
    problems = []
    if fp32_diff > cfg["fp32_tolerance"]:
        problems.append(f"encoder fp32 max abs diff {fp32_diff:.2e} > {cfg['fp32_tolerance']:.0e}")
    if int8_cos is not None and int8_cos < cfg["int8_min_cosine"]:
        problems.append(f"encoder int8 min cosine {int8_cos:.4f} < {cfg['int8_min_cosine']}")
    if fp16_cos is not None and fp16_cos < figures["fp16_min_cosine"]:
        problems.append(f"encoder fp16 min cosine {fp16_cos:.5f} < {figures['fp16_min_cosine']}")
    if head_diff > cfg["fp32_tolerance"]:
        problems.append(f"head max abs diff {head_diff:.2e} > {cfg['fp32_tolerance']:.0e}")
    if problems:
        raise ParityError("parity failed: " + "; ".join(problems))
    return figures


def quantize_to_target(
    bundle: Path, texts: list[str], reference: np.ndarray, max_length: int, min_cosine: float
) -> str:
    """Write ``encoder.int8.onnx`` with the fastest scheme whose min cosine to PyTorch meets
    ``min_cosine``; ``ParityError`` naming the best figure when none does."""
    from service.runtime import OnnxTextEncoder

    best = 0.0
    for scheme in QUANTIZATION_SCHEMES:
        quantize_encoder(bundle / "encoder.onnx", bundle / "encoder.int8.onnx", scheme)
        int8 = OnnxTextEncoder(bundle / "encoder.int8.onnx", bundle / "tokenizer.json", max_length)
        cosine = float(cosine_rows(int8.encode(texts), reference).min())
        best = max(best, cosine)
        if cosine >= min_cosine:
            return scheme
        log.info(
            "int8 scheme %s: min cosine %.4f < %s, trying the next", scheme, cosine, min_cosine
        )
    (bundle / "encoder.int8.onnx").unlink()
    raise ParityError(
        f"parity failed: encoder int8 min cosine {best:.4f} < {min_cosine} with every scheme; "
        "set export.quantize = false to ship fp32 only"
    )


def write_tokenizer(encoder: TextEncoder, bundle: Path) -> None:
    encoder.tokenizer.backend_tokenizer.save(str(bundle / "tokenizer.json"))
    config = {
        "max_length": encoder.max_length,
        "pad_id": int(encoder.tokenizer.pad_token_id),
        "pad_token": str(encoder.tokenizer.pad_token),
        "encoder": encoder.name,
    }
    (bundle / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def switch_current(bundles_dir: Path, bundle_id: str) -> None:
    """Point ``bundles_dir/current`` at ``bundle_id`` with one atomic rename."""
    tmp = bundles_dir / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(bundle_id)
    os.replace(tmp, bundles_dir / CURRENT)


def build_bundle(
    cfg: PipelineConfig,
    trained: TrainedArtifacts,
    bundles_dir: Path,
    progress: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Write a complete, checked bundle and make it ``current``. Nothing is left behind when
    a check fails: the temporary directory is removed and ``current`` is unchanged."""
    import torch

    ec = cfg.export
    hybrid, encoder = trained.hybrid, trained.encoder
    bundle_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    final = bundles_dir / bundle_id
    with atomic_directory(final) as tmp:
        progress("arrays and id maps")
        trained.dataset_users.save(tmp / "user_ids.json")
        trained.dataset_items.save(tmp / "item_ids.json")
        popularity = np.expm1(hybrid.tables.item_log_popularity).round().astype(int)
        items = [
            {"item_id": i, "title": t, "popularity": int(p)}
            for i, t, p in zip(trained.dataset_items.ids, trained.titles, popularity, strict=True)
        ]
        (tmp / "items.json").write_text(json.dumps(items))
        np.save(
            tmp / "user_factors.npy",
            np.ascontiguousarray(hybrid.wals.user_factors, dtype=np.float32),
        )
        np.save(tmp / "item_factors.npy", hybrid.tables.item_factors.astype(np.float32))
        np.save(tmp / "wals_item_factors.npy", hybrid.wals.item_factors.astype(np.float32))
        np.save(tmp / "item_gramian.npy", hybrid.wals.item_gramian.astype(np.float32))
        np.save(tmp / "col_weights.npy", hybrid.wals.col_weight_values.astype(np.float64))
        np.save(tmp / "seen_indptr.npy", hybrid.seen.indptr.astype(np.int64))
        np.save(tmp / "seen_indices.npy", hybrid.seen.indices.astype(np.int32))
        np.save(
            tmp / "item_text_embeddings.npy", hybrid.tables.item_text_embeddings.astype(np.float32)
        )
        np.save(
            tmp / "item_log_popularity.npy", hybrid.tables.item_log_popularity.astype(np.float32)
        )

        progress("FAISS indexes")
        index_cfg = IndexConfig.model_validate(ec.model_dump())
        rng = np.random.default_rng(ec.seed)
        indexes = {}
        import faiss

        for name, vectors, queries in (
            ("wals", hybrid.tables.item_factors, hybrid.wals.user_factors),
            ("text", hybrid.tables.item_text_embeddings, hybrid.tables.item_text_embeddings),
        ):
            built = build_index(vectors, index_cfg)
            sample = queries[
                rng.choice(
                    len(queries), size=min(ec.ann_recall_queries, len(queries)), replace=False
                )
            ]
            recall = ann_recall(
                built.index, vectors.astype(np.float32), sample.astype(np.float32), 100
            )
            if recall < ec.ann_recall_target:
                message = f"{name} index recall@100 {recall:.3f} < target {ec.ann_recall_target}"
                if ec.fail_below_recall_target:
                    raise BundleError(message + ": raise hnsw_ef_search / ivf_nprobe or use flat")
                log.warning(message)
            faiss.write_index(built.index, str(tmp / f"{name}.faiss"))
            indexes[name] = {
                "kind": built.kind,
                "built_on": built.built_on,
                "params": built.params,
                "recall_at_100": recall,
                "size": len(vectors),
            }

        progress("ONNX export and parity")
        write_tokenizer(encoder, tmp)
        texts = parity_texts(trained.texts, ec.parity_texts, ec.seed)
        check_tokenizer_parity(encoder, tmp / "tokenizer.json", texts)
        export_encoder(encoder, tmp / "encoder.onnx", ec.opset)
        export_head(hybrid.head, tmp / "head.onnx", ec.opset)
        reference = encoder.encode(texts)
        scheme = None
        if ec.quantize:
            scheme = quantize_to_target(
                tmp, texts, reference, encoder.max_length, ec.int8_min_cosine
            )
        if ec.fp16:
            convert_to_fp16(tmp / "encoder.onnx", tmp / "encoder.fp16.onnx")
        features = (
            np.random.default_rng(ec.seed)
            .normal(size=(64, hybrid.head.n_features))
            .astype(np.float32)
        )
        with torch.no_grad():
            head_reference = hybrid.head.torch_module()(torch.from_numpy(features)).numpy()
        (tmp / "parity").mkdir()
        (tmp / "parity" / "texts.json").write_text(json.dumps(texts))
        np.save(tmp / "parity" / "encoder_reference.npy", reference)
        np.save(tmp / "parity" / "head_features.npy", features)
        np.save(tmp / "parity" / "head_reference.npy", head_reference.astype(np.float32))
        tolerances = {
            "fp32_tolerance": ec.fp32_tolerance,
            "int8_min_cosine": ec.int8_min_cosine,
            "fp16_min_cosine": ec.fp16_min_cosine,
        }
        parity = check_parity(tmp, texts, reference, features, head_reference, tolerances)

        wals_params = hybrid.wals.get_params()
        manifest = {
            "format_version": FORMAT_VERSION,
            "bundle_id": bundle_id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "counts": {"users": int(hybrid.seen.shape[0]), "items": int(hybrid.seen.shape[1])},
            "dims": {
                "wals": int(hybrid.tables.item_factors.shape[1]),
                "text": int(hybrid.tables.item_text_embeddings.shape[1]),
                "features": int(hybrid.head.n_features),
            },
            "encoder": {
                "name": encoder.name,
                "max_length": encoder.max_length,
                "fine_tuned": trained.fine_tuned,
                "int8_scheme": scheme,
            },
            "wals": wals_params,
            "candidates": {"n_wals": hybrid.n_wals, "n_text": hybrid.n_text},
            "cold_items": int(hybrid.cold_items.sum()),
            "indexes": indexes,
            "parity": parity,
            "packages": package_versions(),
            "files": file_table(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    switch_current(bundles_dir, bundle_id)
    return final


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Re-check every checksum and re-run the parity figures; ``BundleError`` or
    ``ParityError`` with one line on failure. Returns the recomputed figures."""
    from export.manifest import resolve_bundle

    bundle = resolve_bundle(path)
    manifest = read_manifest(bundle)
    texts = json.loads((bundle / "parity" / "texts.json").read_text())
    reference = np.load(bundle / "parity" / "encoder_reference.npy")
    features = np.load(bundle / "parity" / "head_features.npy")
    head_reference = np.load(bundle / "parity" / "head_reference.npy")
    figures = check_parity(bundle, texts, reference, features, head_reference, manifest["parity"])
    return {"bundle_id": manifest["bundle_id"], "files": len(manifest["files"]), "parity": figures}
