"""Training the hybrid, composed: the text half (``models.text``), the head's examples
(``models.examples``), the head, and the final WALS on all training data.

``train_hybrid`` is what both ``walrus train`` (for the bundle, through ``train_all``) and
``walrus eval`` (per split) call, so the evaluated model is the exported one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import PipelineConfig
from models.core.features import FEATURES
from models.data import Dataset
from models.examples import head_pools
from models.head import ScoreHead
from models.hybrid import HybridModel, item_tables
from models.pipeline import binarize, fit_wals, observed
from models.text import Progress, TextResources, prepare_text
from models.trained import TrainedArtifacts


@dataclass(frozen=True)
class WarmStart:
    """Where the final WALS starts: known users' factors from a model served before (NaN
    rows: new users, a random start), and how many iterations it then needs."""

    user_factors: np.ndarray
    wals_iterations: int


def train_hybrid(
    cfg: PipelineConfig,
    train: sp.csr_matrix,
    has_weights: bool,
    text: TextResources,
    progress: Progress | None = None,
    warm: WarmStart | None = None,
) -> HybridModel:
    """WALS on part of ``train``, head examples from the rest, head fit, WALS refit on all
    (from ``warm``'s user factors, for its iterations, when given)."""
    say = progress or (lambda _msg: None)
    pools = head_pools(cfg, train, has_weights, text, say)
    say(f"head on {len(pools)} request pools")
    head = ScoreHead.from_config(cfg.head).fit(pools, feature_names=FEATURES)
    say("WALS on all training data" + (" (warm start)" if warm is not None else ""))
    if warm is None:
        final = fit_wals(cfg, train, has_weights)
    else:
        fewer = cfg.model_copy(update={"wals": replace(cfg.wals, iterations=warm.wals_iterations)})
        final = fit_wals(fewer, train, has_weights, initial_user_factors=warm.user_factors)
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


def train_all(
    cfg: PipelineConfig,
    dataset: Dataset,
    query_log: pd.DataFrame | None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    warm: WarmStart | None = None,
) -> TrainedArtifacts:
    """Encoder (optionally fine-tuned), item embeddings, then ``train_hybrid`` on all data."""
    train = observed(dataset)
    text = prepare_text(cfg, dataset, query_log, work_dir, progress, train)
    hybrid = train_hybrid(cfg, train, dataset.weights is not None, text, progress, warm)
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
