"""The offline evaluation protocol (docs/evaluation.md): every model on every split.

Each model is a function from an ``EvalContext`` to a ``ScoreFn`` over the split's evaluated
rows, so adding a model is adding one entry to ``MODELS``. The text encoder and the item text
embeddings are computed once per run and shared by all splits.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import PipelineConfig
from models.core.errors import WalrusError
from models.core.features import text_profile
from models.core.sparse import csr_row
from models.data import Dataset
from models.data.dataset import Catalog
from models.data.splits import Split
from models.hybrid import HybridModel
from models.metrics import ScoreFn, evaluate_scores
from models.pipeline import binarize, fit_wals, observed
from models.text import TextResources, prepare_text
from models.training import train_hybrid

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """What every split reuses; built on first use."""

    cfg: PipelineConfig
    dataset: Dataset
    query_log: pd.DataFrame | None = None
    progress: Callable[[str], None] = field(default=lambda _m: None)

    @cached_property
    def text(self) -> TextResources:
        return prepare_text(self.cfg, self.dataset, self.query_log, progress=self.progress)

    def with_config(self, cfg: PipelineConfig) -> Shared:
        """The same data under another config (a tuning trial); the text half is shared,
        built once, so ``cfg.encoder`` must not change."""
        out = Shared(cfg, self.dataset, self.query_log, self.progress)
        if "text" in self.__dict__:
            out.text = self.text  # a cached_property: set, it is not built again
        return out


@dataclass
class EvalContext:
    """What a model may use: the config, the dataset, the split and shared resources."""

    shared: Shared
    split: Split
    allowed: np.ndarray | None = None  # a filter's items: requests and metrics keep to them

    @property
    def cfg(self) -> PipelineConfig:
        return self.shared.cfg

    @property
    def dataset(self) -> Dataset:
        return self.shared.dataset

    @property
    def history(self) -> sp.csr_matrix:
        """Per-row items the model is told about and that are excluded from ranking."""
        return self.split.fold_in if self.split.fold_in is not None else self.split.train

    @cached_property
    def text(self) -> TextResources:
        """The shared text half; with co-consumed fine-tuning, this split's own (its pairs
        come from the split's training interactions only)."""
        enc = self.cfg.encoder
        if enc.fine_tune and "co_consumed" in enc.fine_tune_pairs:
            return prepare_text(
                self.cfg,
                self.dataset,
                self.shared.query_log,
                progress=self.shared.progress,
                train=self.split.train,
            )
        return self.shared.text

    @cached_property
    def hybrid(self) -> HybridModel:
        return train_hybrid(
            self.cfg,
            self.split.train,
            self.dataset.weights is not None,
            self.text,
            self.shared.progress,
        )


ModelFactory = Callable[[EvalContext], ScoreFn]
# ``walrus eval --tune``: the config to use for a split, chosen inside its training part
# (split name, training matrix). models.tuning provides it; it imports this module.
Tuner = Callable[[Shared, str, sp.csr_matrix], PipelineConfig]


def popularity_model(ctx: EvalContext) -> ScoreFn:
    """Items ranked by their number of training positives, the same for everyone."""
    counts = np.bincount(ctx.split.train.indices, minlength=ctx.split.train.shape[1])
    scores = counts.astype(np.float32)
    return lambda rows: np.broadcast_to(scores, (len(rows), len(scores)))


def wals_model(ctx: EvalContext) -> ScoreFn:
    """WALS fitted on the split's train; held-out users are folded in from their history."""
    model = fit_wals(ctx.cfg, ctx.split.train, ctx.dataset.weights is not None)
    user_factors = model.user_factors
    if ctx.split.fold_in is not None:
        fold_in = ctx.split.fold_in
        weights = fold_in if ctx.dataset.weights is not None else None
        user_factors = model.fold_in_batch(binarize(fold_in), weights)
    return lambda rows: user_factors[rows] @ model.item_factors.T


def text_model(ctx: EvalContext) -> ScoreFn:
    """Text only: each user's text profile (mean embedding of their history) against items."""
    emb = ctx.text.embeddings
    history = ctx.history

    def score(rows: np.ndarray) -> np.ndarray:
        profiles = np.stack([text_profile(emb, csr_row(history, r)) for r in rows])
        return profiles @ emb.T

    return score


def ranked_rows(n_items: int, rankings: Sequence[np.ndarray]) -> np.ndarray:
    """Score rows that rank each ranking's items first, in order, and everything else last."""
    out = np.full((len(rankings), n_items), -np.inf, dtype=np.float32)
    for row, items in zip(out, rankings, strict=True):
        row[items] = np.arange(len(items), 0, -1, dtype=np.float32)
    return out


def hybrid_model(ctx: EvalContext, cold_every: int | None = None) -> ScoreFn:
    """The served path for a user-only request: known users by their WALS vector, held-out
    users folded in from their history, exactly as the service resolves a request.
    ``cold_every`` replaces ``candidates.cold_every`` when given."""
    hybrid = ctx.hybrid
    if cold_every is not None:
        hybrid = dataclasses.replace(hybrid, cold_every=cold_every)
    history = ctx.history
    folded = ctx.split.fold_in is not None
    k = max(ctx.cfg.eval.ks)

    def score(rows: np.ndarray) -> np.ndarray:
        requests = [
            dataclasses.replace(
                hybrid.request(
                    k,
                    user=None if folded else int(row),
                    history=csr_row(history, row) if folded else None,
                ),
                allowed=ctx.allowed,
            )
            for row in rows
        ]
        return ranked_rows(
            hybrid.tables.n_items, [r.items for r in hybrid.recommend_batch(requests)]
        )

    return score


MODELS: dict[str, ModelFactory] = {
    "popularity": popularity_model,
    "wals": wals_model,
    "text": text_model,
    "hybrid": hybrid_model,
    "hybrid_cold": lambda ctx: hybrid_model(ctx, ctx.cfg.eval.cold_every),
}


def evaluate(
    shared: Shared,
    splits: list[Split],
    models: dict[str, ModelFactory] | None = None,
    on_done: Callable[[str, str], None] | None = None,
    tuner: Tuner | None = None,
    allowed: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rows ``{split, model, recall@K..., ndcg@K..., users, seconds}``, one per pair; the
    ``hybrid`` rows also hold its head's permutation ``importances``. With ``tuner``, each
    split's models use the values it chose inside that split's training part. With
    ``allowed`` (a filter's items, ``models.core.attributes``), a filtered evaluation:
    every model ranks only those items (the hybrid through the served filtered retrieval)
    and Recall@K counts only the held-out items among them."""
    results: list[dict[str, Any]] = []
    for split in splits:
        split_shared = shared
        if tuner is not None:
            split_shared = shared.with_config(tuner(shared, split.name, split.train))
        ctx = EvalContext(split_shared, split, allowed)
        test = split.test if allowed is None else keep_columns(split.test, allowed)
        for name, factory in (models or MODELS).items():
            start = time.perf_counter()
            score_fn = only_allowed(factory(ctx), allowed)
            metrics = evaluate_scores(score_fn, ctx.history, test, shared.cfg.eval.ks)
            row = {"split": split.name, "model": name, **metrics}
            row["seconds"] = time.perf_counter() - start
            if name == "hybrid":
                row["importances"] = ctx.hybrid.head.importances
            results.append(row)
            if on_done is not None:
                on_done(split.name, name)
    return results


def keep_columns(matrix: sp.csr_matrix, allowed: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with only the ``allowed`` columns' entries."""
    kept = matrix.multiply(sp.csr_matrix(allowed.astype(matrix.dtype)[None, :])).tocsr()
    kept.eliminate_zeros()
    return kept


def only_allowed(score_fn: ScoreFn, allowed: np.ndarray | None) -> ScoreFn:
    """``score_fn`` that never ranks an item outside ``allowed``."""
    if allowed is None:
        return score_fn

    def score(rows: np.ndarray) -> np.ndarray:
        scores = np.array(score_fn(rows), dtype=np.float32, copy=True)
        scores[:, ~allowed] = -np.inf
        return scores

    return score


# ---------------------------------------------------------------- the query task
def hold_out_queries(
    query_log: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random ``fraction`` of query-log rows as the test set; the rest may be trained on."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(query_log), dtype=bool)
    test[
        rng.choice(len(query_log), size=max(1, round(fraction * len(query_log))), replace=False)
    ] = True
    return query_log[~test], query_log[test]


def catalog_without_queries(
    catalog: pd.DataFrame, train_log: pd.DataFrame, test_log: pd.DataFrame
) -> pd.DataFrame:
    """Remove held-out queries from the catalog's comma-separated ``tags`` column, unless a
    training query put the same tag on the same item: item text must not leak test queries."""
    if "tags" not in catalog.columns:
        return catalog
    kept = {
        (str(i), str(q).strip().lower())
        for i, q in zip(train_log["item_id"], train_log["query"], strict=True)
    }
    drop: dict[str, set[str]] = {}
    for item, query in zip(
        test_log["item_id"].astype(str), test_log["query"].astype(str), strict=True
    ):
        tag = query.strip().lower()
        if (item, tag) not in kept:
            drop.setdefault(item, set()).add(tag)
    out = catalog.copy()

    def strip(row: pd.Series) -> str:
        tags = [t.strip() for t in str(row["tags"]).split(",") if t.strip()]
        removed = drop.get(str(row["item_id"]), set())
        return ", ".join(t for t in tags if t.lower() not in removed)

    mask = out["item_id"].astype(str).isin(drop.keys())
    out.loc[mask, "tags"] = out[mask].apply(strip, axis=1)
    return out


@dataclass
class QueryTest:
    """The held-out query log as arrays: row r asks ``queries[r]`` for ``users[r]`` (-1: not
    a training user) and is answered by ``items[r]``."""

    users: np.ndarray
    items: np.ndarray
    queries: list[str]

    @classmethod
    def from_log(cls, dataset: Dataset, test_log: pd.DataFrame) -> QueryTest:
        item_idx = test_log["item_id"].astype(str).map(dataset.items.positions)
        keep = item_idx.notna().to_numpy()
        test_log = test_log[keep]
        users = test_log["user_id"].astype(str).map(dataset.users.positions).to_numpy()
        known = ~np.isnan(users.astype(np.float64))
        return cls(
            np.where(known, users, -1).astype(np.int64),
            item_idx[keep].to_numpy().astype(np.int64),
            test_log["query"].astype(str).tolist(),
        )

    def matrix(self, n_items: int) -> sp.csr_matrix:
        n = len(self.items)
        return sp.csr_matrix((np.ones(n), (np.arange(n), self.items)), shape=(n, n_items))


def evaluate_query_task(
    cfg: PipelineConfig,
    dataset: Dataset,
    catalog_frame: pd.DataFrame,
    query_log: pd.DataFrame,
    progress: Callable[[str], None] = lambda _m: None,
    tuner: Tuner | None = None,
) -> list[dict[str, Any]]:
    """For each held-out (user, query, item): the item's rank given the user and the query
    text. Seen items are not excluded (users mostly tag what they rated). The held-out
    queries are the test part: a ``tuner`` sees the interactions and the other queries."""
    train_log, test_log = hold_out_queries(query_log, cfg.eval.query_fraction, cfg.split.seed)
    clean = Catalog.from_frame(
        catalog_without_queries(catalog_frame, train_log, test_log),
        cfg.data.text_template,
        attributes=cfg.data.attributes,
        separator=cfg.data.tag_separator,
    )
    if clean.ids.ids != dataset.items.ids:
        raise WalrusError("the catalog changed while evaluating: item order differs")
    query_dataset = Dataset(dataset.users, clean, dataset.matrix, dataset.weights)
    shared = Shared(cfg, query_dataset, train_log, progress)
    train = observed(dataset)
    if tuner is not None:
        shared = shared.with_config(tuner(shared, "queries", train))
    asked = QueryTest.from_log(dataset, test_log)
    test = asked.matrix(len(dataset.items))
    ctx = EvalContext(shared, Split("queries", train, test))
    nothing = sp.csr_matrix(test.shape)
    results = []
    for name, fn in query_models(ctx, asked, max(cfg.eval.ks)).items():
        start = time.perf_counter()
        metrics = evaluate_scores(fn, nothing, test, cfg.eval.ks)
        row = {"split": "queries", "model": name, **metrics}
        row["seconds"] = time.perf_counter() - start
        if name == "hybrid":
            row["importances"] = ctx.hybrid.head.importances
        results.append(row)
    return results


def query_models(ctx: EvalContext, asked: QueryTest, k: int) -> dict[str, ScoreFn]:
    """The query task's models: the text alone, WALS alone (the user, no query), and the
    served hybrid (user and query)."""
    text, hybrid = ctx.text, ctx.hybrid
    queries = text.encode(asked.queries)
    users, n_items = asked.users, hybrid.tables.n_items

    def text_scores(rows: np.ndarray) -> np.ndarray:
        return queries[rows] @ text.embeddings.T

    def wals_scores(rows: np.ndarray) -> np.ndarray:
        known = users[rows, None] >= 0
        vectors = np.where(known, hybrid.wals.user_factors[np.maximum(users[rows], 0)], 0.0)
        return vectors @ hybrid.wals.item_factors.T + hybrid.tables.item_log_popularity * 1e-6

    def hybrid_scores(rows: np.ndarray) -> np.ndarray:
        requests = [
            hybrid.request(
                k,
                user=int(users[row]) if users[row] >= 0 else None,
                query_vector=queries[row],
                exclude_seen=False,
            )
            for row in rows
        ]
        return ranked_rows(n_items, [r.items for r in hybrid.recommend_batch(requests)])

    return {"text": text_scores, "wals": wals_scores, "hybrid": hybrid_scores}
