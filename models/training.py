"""Training the hybrid: encoder, WALS, cold-start map and score head, in one place.

``prepare_text`` (encoder, optional fine-tuning, item embeddings) and ``train_hybrid`` are
what both ``walrus train`` (for the bundle) and ``walrus eval`` (per split) call, so the
evaluated model is the exported one.

How the head's training data is made: each user's training positives are split once more
(and every interaction of a share of the items is hidden, so they turn cold); WALS is fitted
on the larger part, and the head learns to order the candidate pools the service would build
for requests made from the larger part, with the smaller part's items as positives
(``make_head_pools``). Scores of positives therefore look like scores of unseen items, as
they do at serving time. The final WALS is then refitted on all training data.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.cold_start import fill_cold_items
from models.config import EncoderConfig, PipelineConfig
from models.core.attributes import Column, array_names, from_arrays, to_arrays
from models.core.candidates import ExactSearch, candidate_pools
from models.core.errors import MissingArtifact
from models.core.features import FEATURES, N_FEATURES, text_profile
from models.core.hybrid import PoolSizes, build_request, pool_features, recommend_batch
from models.core.sparse import csr_row
from models.core.types import SOURCES, ItemTables, Recommendation, Request
from models.data import Dataset, IdMap
from models.data.splits import holdout_split
from models.encoder import TextEncoder, build_tiny_roberta, fine_tune
from models.head import RankingPools, ScoreHead
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
    logged = queries_by_item(query_log, dataset.items._index)
    if cfg.encoder.fine_tune:
        say("fine-tuning the encoder")
        losses = fine_tune_encoder(encoder, cfg.encoder, texts, logged, train)
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
    cold_every: int = 0

    def __post_init__(self) -> None:
        self.searcher = exact_search(self.tables)

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

    def recommend_batch(self, requests: Sequence[Request]) -> list[Recommendation]:
        """The service's ``recommend_batch``, with exact search and the numpy head."""
        sizes = PoolSizes(self.n_wals, self.n_text, self.cold_every)
        return recommend_batch(self.tables, requests, self.searcher, self.head.score, sizes)

    def recommend(self, request: Request) -> Recommendation:
        return self.recommend_batch([request])[0]


def exact_search(tables: ItemTables) -> ExactSearch:
    """Exact search over both of a model's indexes: what evaluation and head training run."""
    return ExactSearch({name: tables.index(name) for name in SOURCES})


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
    tables = ItemTables(factors, text_embeddings, np.log1p(counts).astype(np.float32), cold)
    return tables, cold


REQUEST_KINDS = ("user", "history", "user_query", "query")


def request_counts(cfg: PipelineConfig, n_users: int, n_positives: int) -> dict[str, int]:
    """How many training requests of each kind: ``head.max_requests`` in the configured mix,
    scaled down together when users (one user-only and one history-only request each at
    most) or positives (one query request each) run out, so the mix holds."""
    mix = cfg.head.request_mix()
    room = [n_users / mix[k] for k in ("user", "history") if mix[k] > 0]
    queries = mix["user_query"] + mix["query"]
    room += [n_positives / queries] if queries > 0 else []
    total = min([cfg.head.max_requests, *room])
    return {kind: int(total * share) for kind, share in mix.items()}


def make_head_pools(
    cfg: PipelineConfig,
    model: WALS,
    tables: ItemTables,
    history: sp.csr_matrix,
    positives: sp.csr_matrix,
    texts: Sequence[str],
    logged: dict[int, list[str]],
    encode_queries: Callable[[list[str]], np.ndarray],
) -> RankingPools:
    """The pools the service would build for training requests, labelled by held-out positives.

    Requests of each kind of ``head.request_mix``: ``user`` (the user's WALS vector and text
    profile from ``history``; positives: all the user's held-out items), ``history`` (the same
    with the vector folded in from the history, as for a request carrying ``history``),
    ``user_query`` and ``query`` (a query derived from one held-out item, which is the
    only positive; with or without the user). Pools come from ``candidate_pools``, features
    from ``pool_features``: the service's own functions. Pools without a positive teach
    nothing and are dropped.
    """
    rng = np.random.default_rng(cfg.head.seed)
    plan = request_plan(cfg, rng, positives)
    queries = [derived_query(rng, item, texts, logged) if item >= 0 else "" for _, _, item in plan]
    distinct = sorted({q for q in queries if q})
    query_vectors = dict(zip(distinct, encode_queries(distinct), strict=True)) if distinct else {}
    searcher, n_wals, n_text = exact_search(tables), cfg.candidates.n_wals, cfg.candidates.n_text
    out = []
    for start in range(0, len(plan), 512):
        chunk = range(start, min(len(plan), start + 512))
        requests = [
            training_request(plan[e][:2], model, tables, history, query_vectors.get(queries[e]))
            for e in chunk
        ]
        labels = [
            csr_row(positives, user) if item < 0 else np.array([item])
            for _, user, item in (plan[e] for e in chunk)
        ]
        pools = candidate_pools(requests, tables, searcher, n_wals, n_text)
        for request, pool, positive in zip(requests, pools, labels, strict=True):
            if len(pool) < 2 or not any(int(i) in pool for i in positive):
                continue
            candidates, features = pool_features(tables, request, pool)
            out.append((features, np.isin(candidates, positive)))
    return RankingPools.stack(out, N_FEATURES)


def request_plan(
    cfg: PipelineConfig, rng: np.random.Generator, positives: sp.csr_matrix
) -> list[tuple[str, int, int]]:
    """``(kind, user, item)`` of every training request, in ``head.request_mix``; item -1:
    labelled by all the user's positives."""
    users_with_positives = np.flatnonzero(np.diff(positives.indptr))
    counts = request_counts(cfg, len(users_with_positives), positives.nnz)
    coo = positives.tocoo()
    plan: list[tuple[str, int, int]] = []
    for kind in ("user", "history"):
        chosen = rng.choice(users_with_positives, size=counts[kind], replace=False)
        plan += [(kind, int(u), -1) for u in chosen]
    for kind in ("user_query", "query"):
        pick = rng.choice(coo.nnz, size=counts[kind], replace=False)
        plan += [(kind, int(coo.row[e]), int(coo.col[e])) for e in pick]
    return plan


def training_request(
    kind_user: tuple[str, int],
    model: WALS,
    tables: ItemTables,
    history: sp.csr_matrix,
    query_vector: np.ndarray | None,
) -> Request:
    """A training request as the service would resolve it: with the user (their vector,
    or folded in from their history for ``history``), their text profile and their items
    excluded; or, for ``query``, the query alone."""
    kind, user = kind_user
    seen = csr_row(history, user).astype(np.int64)
    if kind == "query":
        return Request(0, query_vector=query_vector)
    user_vector = model.fold_in(seen) if kind == "history" else model.user_factors[user]
    profile = text_profile(tables.item_text_embeddings, seen) if len(seen) else None
    return Request(
        0,
        user_vector=user_vector,
        query_vector=query_vector,
        profile_vector=profile,
        exclude=seen,
    )


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


def head_pools(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    text: TextResources,
    say: Progress,
) -> RankingPools:
    """The head's examples: ``head.example_rounds`` rounds, each its own split of ``train``
    into history and held-out positives (seeded ``head.seed + round``), its own WALS on
    that history, and the pools the service would build from it. More rounds: more pools
    per user (a small catalog of users runs out of requests after one round)."""
    rounds = []
    for r in range(cfg.head.example_rounds):
        round_cfg = cfg.model_copy(
            update={"head": cfg.head.model_copy(update={"seed": cfg.head.seed + r})}
        )
        history, positives = example_split(train, round_cfg)
        say(f"WALS for head examples, round {r + 1}")
        first = fit_wals(cfg, history, has_weights)
        tables_first, _ = item_tables(first, history, text.embeddings, cfg)
        say(f"head examples, round {r + 1}")
        rounds.append(
            make_head_pools(
                round_cfg,
                first,
                tables_first,
                history,
                positives,
                text.texts,
                text.logged,
                text.encode,
            )
        )
    return rounds[0] if len(rounds) == 1 else RankingPools.concat(rounds)


def train_hybrid(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    text: TextResources,
    progress: Progress | None = None,
) -> HybridModel:
    """WALS on part of ``train``, head examples from the rest, head fit, WALS refit on all."""
    say = progress or (lambda _msg: None)
    pools = head_pools(cfg, train, has_weights, text, say)
    say(f"head on {len(pools)} request pools")
    head = ScoreHead.from_config(cfg.head).fit(pools, feature_names=FEATURES)
    say("WALS on all training data")
    final = fit_wals(cfg, train, has_weights)
    tables, cold = item_tables(final, train, text.embeddings, cfg)
    return HybridModel(
        final,
        tables,
        head,
        binarize(train),
        cold,
        cfg.candidates.n_wals,
        cfg.candidates.n_text,
        cfg.candidates.cold_every,
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
    attributes: list[Column] = field(default_factory=list)

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
            "cold_every": self.hybrid.cold_every,
        }
        description, arrays = to_arrays(self.attributes)
        for name, array in arrays.items():
            (path / name).parent.mkdir(exist_ok=True)
            np.save(path / name, array)
        meta["attributes"] = description
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
            np.load(path / "cold_items.npy"),
        )
        hybrid = HybridModel(
            WALS.load(path / "wals"),
            tables,
            ScoreHead.load(path / "head"),
            sp.load_npz(path / "seen.npz").tocsr(),
            np.load(path / "cold_items.npy"),
            meta["n_wals"],
            meta["n_text"],
            meta.get("cold_every", 0),
        )
        return cls(
            hybrid,
            encoder,
            IdMap.load(path / "user_ids.json"),
            IdMap.load(path / "item_ids.json"),
            meta["titles"],
            meta["texts"],
            meta["fine_tuned"],
            load_attributes(path, meta.get("attributes", {}), tables.n_items),
        )


def load_attributes(path: Path, description: dict[str, Any], n_items: int) -> list[Column]:
    arrays = {name: np.load(path / name) for name in array_names(description)}
    return from_arrays(description, arrays, n_items)


def train_all(
    cfg: PipelineConfig,
    dataset: Dataset,
    query_log: pd.DataFrame | None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrainedArtifacts:
    """Encoder (optionally fine-tuned), item embeddings, then ``train_hybrid`` on all data."""
    train = observed(dataset)
    text = prepare_text(cfg, dataset, query_log, work_dir, progress, train)
    hybrid = train_hybrid(cfg, train, dataset.weights is not None, text, progress)
    return TrainedArtifacts(
        hybrid,
        text.encoder,
        dataset.users,
        dataset.items,
        list(dataset.catalog.titles),
        text.texts,
        cfg.encoder.fine_tune,
        dataset.catalog.attributes,
    )
