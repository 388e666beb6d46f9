"""The trained hybrid as training and evaluation hold it: WALS, the item tables, the score
head and the training positives, answering requests through the service's own core
(``models.core.hybrid``) with exact search."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.cold_start import fill_cold_items
from models.config import PipelineConfig
from models.core.candidates import ExactSearch
from models.core.hybrid import PoolSizes, build_request, recommend_batch
from models.core.sparse import csr_row
from models.core.types import SOURCES, ItemTables, Recommendation, Request
from models.head import ScoreHead
from models.wals import WALS


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
