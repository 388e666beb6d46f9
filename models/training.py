"""Training the hybrid: encoder, WALS, cold-start map and score head, in one place.

``prepare_text`` (encoder, optional fine-tuning, item embeddings) and ``train_hybrid`` are
what both ``walrus train`` (for the bundle) and ``walrus eval`` (per split) call, so the
evaluated model is the exported one.

How the head's examples are made: each user's training positives are split once more; WALS
is fitted on the larger part, and the head learns to rank the smaller part's positives
against random and hard negatives (the WALS and text indexes' top items), with the user's
WALS vector and text profile built from the larger part only. Scores of positives therefore
look like scores of unseen items, as they do at serving time. The final WALS is then refitted
on all training data.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.cold_start import fill_cold_items
from models.config import EncoderConfig, PipelineConfig
from models.core.candidates import candidate_pools
from models.core.errors import MissingArtifact
from models.core.features import build_features, text_profile
from models.core.hybrid import (
    ItemTables,
    Recommendation,
    Request,
    build_request,
    exact_search,
    recommend,
)
from models.core.sparse import csr_row
from models.data import Dataset, IdMap
from models.data.splits import holdout_split
from models.encoder import TextEncoder, build_tiny_roberta, fine_tune
from models.head import ScoreHead
from models.pipeline import binarize, fit_wals, observed
from models.wals import WALS

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
    query_log: pd.DataFrame | None, item_index: dict[str, int]
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


def fine_tune_encoder(
    encoder: TextEncoder,
    cfg: EncoderConfig,
    texts: Sequence[str],
    logged: dict[int, list[str]],
) -> list[float]:
    """Contrastive fine-tuning on (derived query, item text) pairs of catalog items.

    The pairs come from item text and the query log only, never from interactions, so the
    same fine-tuned encoder can serve every evaluation split without seeing its test data.
    """
    rng = np.random.default_rng(cfg.seed)
    size = min(len(texts), cfg.fine_tune_max_pairs)
    items = rng.choice(len(texts), size=size, replace=False)
    queries = [derived_query(rng, int(i), texts, logged) for i in items]
    return fine_tune(
        encoder,
        queries,
        [texts[int(i)] for i in items],
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
) -> TextResources:
    """Encoder (fine-tuned when configured) and item text embeddings: the text half, built
    the same way for the bundle (``train_all``) and for evaluation."""
    say = progress or (lambda _msg: None)
    texts = list(dataset.catalog.texts)
    say("loading the encoder")
    encoder = load_encoder(cfg.encoder, texts, work_dir)
    logged = queries_by_item(query_log, dataset.items._index)
    if cfg.encoder.fine_tune:
        say("fine-tuning the encoder")
        losses = fine_tune_encoder(encoder, cfg.encoder, texts, logged)
        log.info("fine-tuning loss per epoch: %s", losses)
    say(f"encoding {len(texts)} item texts")
    embeddings = encoder.encode(texts, batch_size=cfg.encoder.batch_size)
    return TextResources(encoder, texts, embeddings, logged, cfg.encoder.batch_size)


@dataclass
class HybridModel:
    """Everything a request needs, trained on one training matrix."""

    wals: WALS
    tables: ItemTables
    head: ScoreHead
    seen: sp.csr_matrix  # users x items training positives
    cold_items: np.ndarray  # (n_items,) bool: factors came from the ridge map
    n_wals: int = 100
    n_text: int = 100

    def __post_init__(self) -> None:
        self._wals_search = exact_search(self.tables.item_factors)
        self._text_search = exact_search(self.tables.item_text_embeddings)

    def request(
        self,
        k: int,
        *,
        user: int | None = None,
        history: np.ndarray | None = None,
        query_vector: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        exclude_seen: bool = True,
    ) -> Request:
        """A request resolved the way the service resolves one (``core.hybrid.build_request``):
        ``user`` is a row of the training matrix, ``history`` fresh item indices."""
        empty = np.zeros(0, dtype=np.int64)
        seen = csr_row(self.seen, user) if user is not None else empty
        return build_request(
            k,
            user_vector=self.wals.user_factors[user] if user is not None else None,
            seen=seen,
            history=empty if history is None else history,
            exclude=empty if exclude is None else exclude,
            exclude_seen=exclude_seen,
            query_vector=query_vector,
            item_text_embeddings=self.tables.item_text_embeddings,
            fold_in=self.wals.fold_in,
        )

    def recommend(self, request: Request) -> Recommendation:
        return recommend(
            self.tables,
            request,
            self._wals_search,
            self._text_search,
            self.head.score,
            self.n_wals,
            self.n_text,
        )


def item_tables(
    model: WALS, train: sp.csr_matrix, text_embeddings: np.ndarray, cfg: PipelineConfig
) -> tuple[ItemTables, np.ndarray]:
    counts = np.bincount(train.indices, minlength=train.shape[1])
    factors, cold = fill_cold_items(
        model.item_factors,
        counts,
        text_embeddings,
        cfg.cold_start.min_interactions,
        cfg.cold_start.ridge_alpha,
    )
    return ItemTables(factors, text_embeddings, np.log1p(counts).astype(np.float32)), cold


def make_head_examples(
    cfg: PipelineConfig,
    model: WALS,
    tables: ItemTables,
    history: sp.csr_matrix,
    positives: sp.csr_matrix,
    texts: Sequence[str],
    logged: dict[int, list[str]],
    encode_queries: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """(n_examples, 1 + n_negatives, n_features) groups, positive first.

    Hard negatives come from the candidate pool the service would build for the example's
    request (WALS top ``n_wals`` for the user, text top ``n_text`` for the query or profile,
    seen items excluded), and only when the positive is in that pool: the head only ever
    reranks candidates, so it must learn to order a pool, not to tell the pool from the
    positive. Random negatives fill the rest.
    """
    hc, cc = cfg.head, cfg.candidates
    rng = np.random.default_rng(hc.seed)
    coo = positives.tocoo()
    pick = rng.permutation(coo.nnz)[: hc.max_examples]
    users, items = coo.row[pick], coo.col[pick]
    n = len(users)
    has_user = rng.random(n) >= hc.no_user_share
    has_query = rng.random(n) >= hc.no_query_share
    queries = [
        derived_query(rng, int(i), texts, logged) if q else ""
        for i, q in zip(items, has_query, strict=True)
    ]
    distinct = sorted({q for q in queries if q})
    query_vectors = dict(zip(distinct, encode_queries(distinct), strict=True)) if distinct else {}

    n_items = tables.n_items
    n_neg = hc.random_negatives + hc.hard_negatives
    groups = []
    for start in range(0, n, 512):
        chunk = range(start, min(n, start + 512))
        user_vecs, query_vecs, profiles, seens = [], [], [], []
        for e in chunk:
            user = int(users[e])
            seen = csr_row(history, user).astype(np.int64)
            seens.append(seen)
            user_vecs.append(model.user_factors[user] if has_user[e] else None)
            profiles.append(
                text_profile(tables.item_text_embeddings, seen)
                if has_user[e] and len(seen)
                else None
            )
            query_vecs.append(query_vectors.get(queries[e]))
        requests = [
            Request(0, user_vector=u, query_vector=q, profile_vector=p, exclude=seen)
            for u, q, p, seen in zip(user_vecs, query_vecs, profiles, seens, strict=True)
        ]
        pools = candidate_pools(tables, requests, cc.n_wals, cc.n_text)
        for b, e in enumerate(chunk):
            item = int(items[e])
            blocked = set(seens[b].tolist()) | {item}
            pool = pools[b]
            negatives: list[int] = []
            if item in pool:
                others = [c for c in pool if c != item]
                if others:
                    size = min(hc.hard_negatives, len(others))
                    negatives = rng.choice(others, size=size, replace=False).tolist()
            while len(negatives) < n_neg:
                cand = int(rng.integers(n_items))
                if cand not in blocked or len(blocked) >= n_items:
                    negatives.append(cand)
            ids = np.array([item, *negatives], dtype=np.int64)
            groups.append(
                build_features(
                    user_vecs[b],
                    query_vecs[b],
                    profiles[b],
                    tables.item_factors[ids],
                    tables.item_text_embeddings[ids],
                    tables.item_log_popularity[ids],
                )
            )
    return np.stack(groups)


def example_split(train: sp.csr_matrix, cfg: PipelineConfig) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(history, positives)``: a per-user holdout of ``head.example_fraction``, plus every
    interaction of ``head.cold_item_share`` of the items moved to the positives side, so
    some positives are cold items exactly as the service sees them."""
    split = holdout_split(train, cfg.head.example_fraction, seed=cfg.head.seed)
    history, positives = split.train, split.test
    if cfg.head.cold_item_share > 0:
        rng = np.random.default_rng(cfg.head.seed + 1)
        cold = (rng.random(train.shape[1]) < cfg.head.cold_item_share).astype(history.dtype)
        moved = history.multiply(sp.csr_matrix(cold[None, :])).tocsr()
        history = (history - moved).tocsr()
        history.eliminate_zeros()
        positives = (positives + moved).tocsr()
    return history, positives


def train_hybrid(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    text: TextResources,
    progress: Progress | None = None,
) -> HybridModel:
    """WALS on part of ``train``, head examples from the rest, head fit, WALS refit on all."""
    say = progress or (lambda _msg: None)
    history, positives = example_split(train, cfg)
    say("WALS for head examples")
    first = fit_wals(cfg, history, has_weights)
    tables_first, _ = item_tables(first, history, text.embeddings, cfg)
    say("head examples")
    groups = make_head_examples(
        cfg, first, tables_first, history, positives, text.texts, text.logged, text.encode
    )
    say(f"head on {len(groups)} examples")
    hc = cfg.head
    head = ScoreHead.from_config(hc).fit(groups)
    say("WALS on all training data")
    final = fit_wals(cfg, train, has_weights)
    tables, cold = item_tables(final, train, text.embeddings, cfg)
    return HybridModel(
        final, tables, head, binarize(train), cold, cfg.candidates.n_wals, cfg.candidates.n_text
    )


@dataclass
class TrainedArtifacts:
    """What ``walrus train hybrid`` produces and ``walrus export`` consumes."""

    hybrid: HybridModel
    encoder: TextEncoder
    dataset_users: IdMap
    dataset_items: IdMap
    titles: list[str]
    texts: list[str]
    fine_tuned: bool = False

    def save(self, path: Path) -> None:
        """Plain files only (npy, npz, json, safetensors): no pickle."""
        self.encoder.save(path / "encoder")
        self.hybrid.wals.save(path / "wals")
        self.hybrid.head.save(path / "head")
        np.save(path / "item_factors.npy", self.hybrid.tables.item_factors)
        np.save(path / "item_text_embeddings.npy", self.hybrid.tables.item_text_embeddings)
        np.save(path / "item_log_popularity.npy", self.hybrid.tables.item_log_popularity)
        np.save(path / "cold_items.npy", self.hybrid.cold_items)
        sp.save_npz(path / "seen.npz", self.hybrid.seen, compressed=False)
        self.dataset_users.save(path / "user_ids.json")
        self.dataset_items.save(path / "item_ids.json")
        meta = {
            "titles": self.titles,
            "texts": self.texts,
            "fine_tuned": self.fine_tuned,
            "encoder_name": self.encoder.name,
            "max_length": self.encoder.max_length,
            "n_wals": self.hybrid.n_wals,
            "n_text": self.hybrid.n_text,
        }
        (path / "trained.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> TrainedArtifacts:
        if not (path / "trained.json").is_file():
            raise MissingArtifact(f"{path}: no trained model; run `walrus train hybrid` first")
        meta = json.loads((path / "trained.json").read_text())
        encoder = TextEncoder.load(str(path / "encoder"), meta["max_length"])
        encoder.name = meta["encoder_name"]
        tables = ItemTables(
            np.load(path / "item_factors.npy"),
            np.load(path / "item_text_embeddings.npy"),
            np.load(path / "item_log_popularity.npy"),
        )
        hybrid = HybridModel(
            WALS.load(path / "wals"),
            tables,
            ScoreHead.load(path / "head"),
            sp.load_npz(path / "seen.npz").tocsr(),
            np.load(path / "cold_items.npy"),
            meta["n_wals"],
            meta["n_text"],
        )
        return cls(
            hybrid,
            encoder,
            IdMap.load(path / "user_ids.json"),
            IdMap.load(path / "item_ids.json"),
            meta["titles"],
            meta["texts"],
            meta["fine_tuned"],
        )


def train_all(
    cfg: PipelineConfig,
    dataset: Dataset,
    query_log: pd.DataFrame | None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrainedArtifacts:
    """Encoder (optionally fine-tuned), item embeddings, then ``train_hybrid`` on all data."""
    text = prepare_text(cfg, dataset, query_log, work_dir, progress)
    hybrid = train_hybrid(cfg, observed(dataset), dataset.weights is not None, text, progress)
    return TrainedArtifacts(
        hybrid,
        text.encoder,
        dataset.users,
        dataset.items,
        list(dataset.catalog.titles),
        text.texts,
        cfg.encoder.fine_tune,
    )
