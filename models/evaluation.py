"""The offline evaluation protocol (docs/evaluation.md): every model on every split.

Each model is a function from a split to a ``ScoreFn`` over the split's evaluated rows, so
adding a model (text-only, hybrid) is adding one entry to ``MODELS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.config import PipelineConfig
from models.data import Dataset
from models.data.splits import Split
from models.metrics import ScoreFn, evaluate_scores


@dataclass
class EvalContext:
    """What a model may use: the config, the dataset (for text) and the split."""

    cfg: PipelineConfig
    dataset: Dataset
    split: Split

    @property
    def history(self) -> sp.csr_matrix:
        """Per-row items the model is told about and that are excluded from ranking."""
        return self.split.fold_in if self.split.fold_in is not None else self.split.train


ModelFactory = Callable[[EvalContext], ScoreFn]


def popularity_model(ctx: EvalContext) -> ScoreFn:
    """Items ranked by their number of training positives, the same for everyone."""
    counts = np.bincount(ctx.split.train.indices, minlength=ctx.split.train.shape[1])
    scores = counts.astype(np.float32)
    return lambda rows: np.broadcast_to(scores, (len(rows), len(scores)))


def wals_model(ctx: EvalContext) -> ScoreFn:
    """WALS fitted on the split's train; held-out users are folded in from their history."""
    from models.pipeline import fit_wals

    model = fit_wals(ctx.cfg, ctx.split.train, ctx.dataset.weights is not None)
    user_factors = model.user_factors
    if ctx.split.fold_in is not None:
        user_factors = model.fold_in_batch(ctx.split.fold_in)
    return lambda rows: user_factors[rows] @ model.item_factors.T


MODELS: dict[str, ModelFactory] = {"popularity": popularity_model, "wals": wals_model}


def evaluate(
    cfg: PipelineConfig,
    dataset: Dataset,
    splits: list[Split],
    models: dict[str, ModelFactory] | None = None,
    on_done: Callable[[str, str], None] | None = None,
) -> list[dict[str, float | str]]:
    """Rows ``{split, model, recall@K..., ndcg@K..., users, seconds}``, one per pair."""
    results: list[dict[str, float | str]] = []
    for split in splits:
        ctx = EvalContext(cfg, dataset, split)
        for name, factory in (models or MODELS).items():
            start = time.perf_counter()
            score_fn = factory(ctx)
            metrics = evaluate_scores(score_fn, ctx.history, split.test, cfg.eval.ks)
            results.append(
                {
                    "split": split.name,
                    "model": name,
                    **metrics,
                    "seconds": time.perf_counter() - start,
                }
            )
            if on_done is not None:
                on_done(split.name, name)
    return results
