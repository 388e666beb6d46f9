"""The text half of the hybrid: the encoder (optionally fine-tuned on pairs from the
training interactions), the item texts' embeddings, and the queries derived from items.

``prepare_text`` is what both ``walrus train`` (for the bundle) and ``walrus eval`` (per
split) call, so the evaluated encoder is the exported one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import EncoderConfig, PipelineConfig
from models.data import Dataset
from models.encoder import TextEncoder, build_tiny_roberta, fine_tune

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def load_encoder(
    cfg: EncoderConfig, catalog_texts: Sequence[str], work_dir: Path | None = None
) -> TextEncoder:
    """The configured encoder; ``tiny-roberta`` is built from the catalog texts on the spot."""
    if cfg.name == "tiny-roberta":
        work_dir = work_dir or Path(tempfile.mkdtemp(prefix="walrus-tiny-roberta-"))
        path = build_tiny_roberta(
            catalog_texts,
            work_dir,
            vocab_size=cfg.tiny_vocab_size,
            hidden_size=cfg.tiny_hidden_size,
            layers=cfg.tiny_layers,
            heads=cfg.tiny_heads,
            max_position=cfg.max_length + 2,
            seed=cfg.seed,
        )
        encoder = TextEncoder.load(str(path), cfg.max_length)
        encoder.name = cfg.name  # the manifest names what was configured, not a temp path
        return encoder
    return TextEncoder.load(cfg.name, cfg.max_length)


def queries_by_item(
    query_log: pd.DataFrame | None, item_index: Mapping[str, int]
) -> dict[int, list[str]]:
    """Query strings of the log grouped by item index (unknown items dropped)."""
    out: dict[int, list[str]] = {}
    if query_log is None:
        return out
    for item_id, query in zip(
        query_log["item_id"].astype(str), query_log["query"].astype(str), strict=True
    ):
        idx = item_index.get(item_id)
        if idx is not None and query.strip():
            out.setdefault(idx, []).append(query.strip())
    return out


def derived_query(
    rng: np.random.Generator, item: int, texts: Sequence[str], logged: dict[int, list[str]]
) -> str:
    """A query that should find ``item``: one of its logged queries (MovieLens: a tag), else
    one to three words drawn from its text."""
    if item in logged:
        options = logged[item]
        return options[int(rng.integers(len(options)))]
    words = [w.strip(".,;:()|") for w in texts[item].split()]
    words = [w for w in words if len(w) > 2] or words or [""]
    n = int(rng.integers(1, min(3, len(words)) + 1))
    return " ".join(rng.choice(words, size=n, replace=False))


def co_consumed_pairs(
    rng: np.random.Generator, train: sp.csr_matrix, n: int
) -> list[tuple[int, int]]:
    """``n`` (item, other item) pairs consumed by one user; users (those with two items or
    more) drawn in proportion to their number of items."""
    counts = np.diff(train.indptr)
    users = np.flatnonzero(counts >= 2)
    if len(users) == 0 or n <= 0:
        return []
    weights = counts[users] / counts[users].sum()
    out = []
    for user in rng.choice(users, size=n, p=weights):
        row = train.indices[train.indptr[user] : train.indptr[user + 1]]
        a, b = rng.choice(len(row), size=2, replace=False)
        out.append((int(row[a]), int(row[b])))
    return out


def fine_tune_encoder(
    encoder: TextEncoder,
    cfg: EncoderConfig,
    texts: Sequence[str],
    logged: dict[int, list[str]],
    train: sp.csr_matrix | None = None,
) -> list[float]:
    """Contrastive fine-tuning on ``encoder.fine_tune_pairs``: (derived query, item text)
    pairs of catalog items (``queries``: item text and the query log only), and (item text,
    co-consumed item text) pairs from ``train`` (``co_consumed``), half of
    ``fine_tune_max_pairs`` each. Callers pass only training interactions (the split's, in
    evaluation), so the encoder never sees test data."""
    rng = np.random.default_rng(cfg.seed)
    kinds = [k for k in cfg.fine_tune_pairs if k != "co_consumed" or train is not None]
    per_kind = cfg.fine_tune_max_pairs // max(len(kinds), 1)
    left: list[str] = []
    right: list[str] = []
    if "queries" in kinds:
        items = rng.choice(len(texts), size=min(len(texts), per_kind), replace=False)
        left += [derived_query(rng, int(i), texts, logged) for i in items]
        right += [texts[int(i)] for i in items]
    if "co_consumed" in kinds:
        assert train is not None  # kinds holds co_consumed only with a train matrix
        for a, b in co_consumed_pairs(rng, train, per_kind):
            left.append(texts[a])
            right.append(texts[b])
    return fine_tune(
        encoder,
        left,
        right,
        epochs=cfg.fine_tune_epochs,
        batch_size=cfg.fine_tune_batch_size,
        learning_rate=cfg.fine_tune_learning_rate,
        freeze_layers=cfg.freeze_layers,
        seed=cfg.seed,
    )


@dataclass
class TextResources:
    """The encoder, the item texts it embedded, and the query log by item."""

    encoder: TextEncoder
    texts: list[str]
    embeddings: np.ndarray
    logged: dict[int, list[str]]
    batch_size: int = 64

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=self.batch_size)


def prepare_text(
    cfg: PipelineConfig,
    dataset: Dataset,
    query_log: pd.DataFrame | None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    train: sp.csr_matrix | None = None,
) -> TextResources:
    """Encoder (fine-tuned when configured, co-consumed pairs from ``train``) and item text
    embeddings: the text half, built the same way for the bundle (``train_all``) and for
    evaluation."""
    say = progress or (lambda _msg: None)
    texts = list(dataset.catalog.texts)
    say("loading the encoder")
    encoder = load_encoder(cfg.encoder, texts, work_dir)
    logged = queries_by_item(query_log, dataset.items.positions)
    if cfg.encoder.fine_tune:
        say("fine-tuning the encoder")
        losses = fine_tune_encoder(encoder, cfg.encoder, texts, logged, train)
        log.info("fine-tuning loss per epoch: %s", losses)
    say(f"encoding {len(texts)} item texts")
    embeddings = encoder.encode(texts, batch_size=cfg.encoder.batch_size)
    return TextResources(encoder, texts, embeddings, logged, cfg.encoder.batch_size)
