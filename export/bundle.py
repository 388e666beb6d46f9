"""The export step: turns trained artifacts into a bundle (``export.format``), written
atomically and checked before it becomes ``current``.

``build_bundle`` runs four steps into a temporary folder: arrays and id maps, FAISS indexes,
ONNX models with their parity check, the manifest. A failed check removes the folder and
leaves ``current`` untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from export.faiss_index import build_index, speedup_over_flat, tune_search
from export.format import (
    FORMAT_VERSION,
    BundleError,
    Candidates,
    CatalogText,
    Dims,
    Files,
    IndexEntry,
    Manifest,
    file_table,
    new_bundle_id,
    switch_current,
    utc_now,
)
from export.onnx import (
    QUANTIZATION_SCHEMES,
    check_tokenizer_parity,
    convert_to_fp16,
    export_encoder,
    export_head,
    quantize_encoder,
)
from export.runtime import OnnxTextEncoder, ParityError, check_parity, cosine_rows
from export.signing import finish
from models.artifacts import atomic_directory
from models.cold_start import cold_start_map
from models.core.attributes import Column, to_arrays

if TYPE_CHECKING:
    from models.config import PipelineConfig
    from models.encoder import TextEncoder
    from models.trained import TrainedArtifacts

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


def quantize_to_target(
    bundle: Path, texts: list[str], reference: np.ndarray, max_length: int, min_cosine: float
) -> str:
    """Write ``encoder.int8.onnx`` with the fastest scheme whose min cosine to PyTorch meets
    ``min_cosine``; ``ParityError`` naming the best figure when none does."""
    best = 0.0
    fp32_path, int8_path = bundle / Files.ENCODER["fp32"], bundle / Files.ENCODER["int8"]
    for scheme in QUANTIZATION_SCHEMES:
        quantize_encoder(fp32_path, int8_path, scheme)
        int8 = OnnxTextEncoder(int8_path, bundle / Files.TOKENIZER, max_length)
        cosine = float(cosine_rows(int8.encode(texts), reference).min())
        best = max(best, cosine)
        if cosine >= min_cosine:
            return scheme
        log.info(
            "int8 scheme %s: min cosine %.4f < %s, trying the next", scheme, cosine, min_cosine
        )
    int8_path.unlink()
    raise ParityError(
        f"parity failed: encoder int8 min cosine {best:.4f} < {min_cosine} with every scheme; "
        "set export.quantize = false to ship fp32 only"
    )


def write_tokenizer(encoder: TextEncoder, bundle: Path) -> None:
    encoder.tokenizer.backend_tokenizer.save(str(bundle / Files.TOKENIZER))
    config = {
        "max_length": encoder.max_length,
        "pad_id": int(encoder.tokenizer.pad_token_id),
        "pad_token": str(encoder.tokenizer.pad_token),
        "encoder": encoder.name,
    }
    (bundle / Files.TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2))


def build_bundle(
    cfg: PipelineConfig,
    trained: TrainedArtifacts,
    bundles_dir: Path,
    progress: Callable[[str], None] = lambda _m: None,
    sign_with: Path | None = None,
) -> Path:
    """Write a complete, checked bundle (signed with the private key ``sign_with`` names,
    if any) and make it ``current``. Nothing is left behind when a check fails: the
    temporary directory is removed and ``current`` is unchanged."""
    bundle_id = new_bundle_id()
    final = bundles_dir / bundle_id
    with atomic_directory(final) as tmp:
        progress("arrays and id maps")
        write_arrays(tmp, trained)
        write_cold_start(tmp, trained, cfg.cold_start.ridge_alpha)
        progress("FAISS indexes")
        indexes = write_indexes(tmp, trained, cfg)
        progress("ONNX export and parity")
        scheme, parity = write_onnx(tmp, trained, cfg)
        hybrid, encoder = trained.hybrid, trained.encoder
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            bundle_id=bundle_id,
            created_at=utc_now(),
            counts={"users": int(hybrid.seen.shape[0]), "items": int(hybrid.seen.shape[1])},
            dims=Dims(
                wals=int(hybrid.tables.item_factors.shape[1]),
                text=int(hybrid.tables.item_text_embeddings.shape[1]),
                features=int(hybrid.head.n_features),
            ),
            encoder={
                "name": encoder.name,
                "max_length": encoder.max_length,
                "fine_tuned": trained.fine_tuned,
                "int8_scheme": scheme,
            },
            wals=hybrid.wals.params,
            candidates=Candidates(
                n_wals=hybrid.n_wals, n_text=hybrid.n_text, cold_every=hybrid.cold_every
            ),
            cold_items=int(hybrid.cold_items.sum()),
            indexes=indexes,
            parity=parity,
            packages=package_versions(),
            files=file_table(tmp),
            catalog=CatalogText(
                text_template=cfg.data.text_template,
                attributes=[c.name for c in trained.attributes],
                tag_separator=cfg.data.tag_separator,
            ),
            event_types=dict(cfg.events.types),
        )
        finish(tmp, manifest, sign_with)
    switch_current(bundles_dir, bundle_id)
    return final


def write_arrays(bundle: Path, trained: TrainedArtifacts) -> None:
    """Id maps, item metadata and every numpy array the service loads."""
    hybrid = trained.hybrid
    trained.dataset_users.save(bundle / Files.USER_IDS)
    trained.dataset_items.save(bundle / Files.ITEM_IDS)
    popularity = np.expm1(hybrid.tables.item_log_popularity).round().astype(int)
    items = [
        {"item_id": i, "title": t, "popularity": int(p)}
        for i, t, p in zip(trained.dataset_items.ids, trained.titles, popularity, strict=True)
    ]
    (bundle / Files.ITEMS).write_text(json.dumps(items))
    # np.asarray copies only when the dtype differs: 10M user factors are not held twice.
    arrays = {
        Files.USER_FACTORS: np.asarray(hybrid.wals.user_factors, np.float32),
        Files.ITEM_FACTORS: np.asarray(hybrid.tables.item_factors, np.float32),
        Files.WALS_ITEM_FACTORS: np.asarray(hybrid.wals.item_factors, np.float32),
        Files.ITEM_GRAMIAN: np.asarray(hybrid.wals.item_gramian, np.float32),
        Files.COL_WEIGHTS: np.asarray(hybrid.wals.col_weight_values, np.float64),
        Files.COLD_ITEMS: hybrid.cold_items.astype(bool),
        Files.SEEN_INDPTR: np.asarray(hybrid.seen.indptr, np.int64),
        Files.SEEN_INDICES: np.asarray(hybrid.seen.indices, np.int32),
        Files.ITEM_TEXT_EMBEDDINGS: np.asarray(hybrid.tables.item_text_embeddings, np.float32),
        Files.ITEM_LOG_POPULARITY: np.asarray(hybrid.tables.item_log_popularity, np.float32),
    }
    for name, array in arrays.items():
        np.save(bundle / name, np.ascontiguousarray(array))
    write_attributes(bundle, trained.attributes)


def write_cold_start(bundle: Path, trained: TrainedArtifacts, alpha: float) -> None:
    """The cold-start map, fitted as training fitted it (``models.cold_start``), for the
    items a bundle update adds; nothing when every item is cold (no map to fit)."""
    hybrid = trained.hybrid
    ridge = cold_start_map(
        hybrid.wals.item_factors, hybrid.cold_items, hybrid.tables.item_text_embeddings, alpha
    )
    if ridge is None:
        return
    (bundle / "cold_start").mkdir()
    np.save(bundle / Files.COLD_START_COEF, ridge.coef)
    np.save(bundle / Files.COLD_START_INTERCEPT, ridge.intercept)


def write_attributes(bundle: Path, columns: list[Column]) -> None:
    """``attributes.json`` and each column's arrays; nothing when the catalog declares no
    attributes."""
    if not columns:
        return
    description, arrays = to_arrays(columns)
    (bundle / "attributes").mkdir()
    for name, array in arrays.items():
        np.save(bundle / name, np.ascontiguousarray(array))
    (bundle / Files.ATTRIBUTES).write_text(json.dumps(description))


def write_indexes(
    bundle: Path, trained: TrainedArtifacts, cfg: PipelineConfig
) -> dict[str, IndexEntry]:
    """Both FAISS indexes, each with its recall@100 against exact search on sample queries."""
    ec, hybrid = cfg.export, trained.hybrid
    rng = np.random.default_rng(ec.seed)
    indexes = {}
    for name, vectors, queries in (
        ("wals", hybrid.tables.item_factors, hybrid.wals.user_factors),
        ("text", hybrid.tables.item_text_embeddings, hybrid.tables.item_text_embeddings),
    ):
        built = build_index(vectors, ec)
        size = min(ec.ann_recall_queries, len(queries))
        sample = queries[rng.choice(len(queries), size=size, replace=False)]
        recall = tune_search(built, vectors, sample, ec.ann_recall_target)
        if recall < ec.ann_recall_target:
            message = f"{name} index recall@100 {recall:.3f} < target {ec.ann_recall_target}"
            if ec.fail_below_recall_target:
                raise BundleError(message + ": raise hnsw_ef_search / ivf_nprobe or use flat")
            log.warning(message)
        faiss.write_index(built.index, str(bundle / Files.index(name)))
        indexes[name] = IndexEntry(
            kind=built.kind,
            factory=built.factory,
            search_params=built.search_params,
            built_on=built.built_on,
            build_params=built.build_params,
            recall_at_100=recall,
            size=len(vectors),
            speedup_over_flat=speedup_over_flat(built, vectors, sample[:100]),
        )
    return indexes


def write_onnx(
    bundle: Path, trained: TrainedArtifacts, cfg: PipelineConfig
) -> tuple[str | None, dict[str, Any]]:
    """Tokenizer, encoder (fp32, int8, fp16) and head ONNX files, the parity references, and
    the parity check; returns the int8 scheme and the parity figures."""
    ec, encoder, head = cfg.export, trained.encoder, trained.hybrid.head
    write_tokenizer(encoder, bundle)
    texts = parity_texts(trained.texts, ec.parity_texts, ec.seed)
    check_tokenizer_parity(encoder, bundle / Files.TOKENIZER, texts)
    export_encoder(encoder, bundle / Files.ENCODER["fp32"], ec.opset)
    export_head(head, bundle / Files.HEAD, ec.opset)
    reference = encoder.encode(texts)
    scheme = None
    if ec.quantize:
        scheme = quantize_to_target(
            bundle, texts, reference, encoder.max_length, ec.int8_min_cosine
        )
    if ec.fp16:
        convert_to_fp16(bundle / Files.ENCODER["fp32"], bundle / Files.ENCODER["fp16"])
    features = np.random.default_rng(ec.seed).normal(size=(64, head.n_features)).astype(np.float32)
    head_reference = head.torch_scores(features)
    (bundle / "parity").mkdir()
    (bundle / Files.PARITY_TEXTS).write_text(json.dumps(texts))
    np.save(bundle / Files.PARITY_ENCODER, reference)
    np.save(bundle / Files.PARITY_HEAD_FEATURES, features)
    np.save(bundle / Files.PARITY_HEAD, head_reference)
    tolerances = {
        "fp32_tolerance": ec.fp32_tolerance,
        "int8_min_cosine": ec.int8_min_cosine,
        "fp16_min_cosine": ec.fp16_min_cosine,
    }
    return scheme, check_parity(bundle, texts, reference, features, head_reference, tolerances)
