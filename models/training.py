"""Training the hybrid, composed: the text half (``models.text``), the head's examples
(``models.examples``), the head, and the final WALS on all training data.

``train_hybrid`` is what both ``walrus train`` (for the bundle, through ``train_all``) and
``walrus eval`` (per split) call, so the evaluated model is the exported one.
"""

from __future__ import annotations

from pathlib import Path

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
