"""A bundle at the seed's scale, written directly (``walrus bundle synthetic``).

Fitting WALS on 10M users is not what a serving benchmark should wait for, so the factors
are drawn the way a fitted model's look: users and items in topic clusters (and tastes
within a topic), each user's seen
list drawn mostly from its topic with a popularity skew. Everything else is real and goes
through the export step every bundle takes: item titles of real words embedded by the real
encoder (distinct titles are encoded once; catalogs repeat titles), cold items (never seen)
mapped by the ridge map, a score head trained on examples from the service's own candidate
pools, indexes chosen by size with recall and speed-up measured, ONNX with its parity check.

Memory: user factors and seen lists are written to disk in chunks and memory-mapped, so the
peak is the export's own copy of them, not several.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from export.bundle import build_bundle
from models.cold_start import fill_cold_items
from models.config import DataConfig, ExportConfig, HeadConfig, PipelineConfig
from models.core.fold_in import weights_from_counts
from models.core.types import ItemTables
from models.data import IdMap
from models.data.synthetic import attribute_arrays
from models.data.vocabulary import TOPICS
from models.encoder import TextEncoder
from models.examples import make_head_pools
from models.head import ScoreHead
from models.hybrid import HybridModel
from models.pipeline import local_wals
from models.trained import TrainedArtifacts
from models.wals import WALS

log = logging.getLogger(__name__)
CHUNK = 1_000_000  # users generated at a time


@dataclass(frozen=True)
class SeedSpec:
    users: int = 10_000_000
    items: int = 500_000
    dim: int = 64
    seen_per_user: int = 10
    titles: int = 50_000  # distinct titles; items share them
    head_examples: int = 4_000
    seed: int = 0


def seed_config(spec: SeedSpec, out: Path, encoder: str) -> PipelineConfig:
    """What the export runs with: IVF above 50k items (an HNSW graph over 500k text vectors
    takes too long to build on two cores), search parameters tuned to recall@100 ≥ 0.95."""
    cfg = PipelineConfig(
        output_dir=out,
        data=DataConfig(interactions=Path("synthetic-seed")),
        head=HeadConfig(max_requests=spec.head_examples, epochs=10, cold_item_share=0.0),
        export=ExportConfig(bundles_dir=out, auto_large="ivf", ann_recall_queries=200),
    )
    cfg.wals.dim = spec.dim
    cfg.encoder.name = encoder
    return cfg


def make_titles(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """``n`` distinct titles of two to four words of one topic, and each title's topic."""
    names = list(TOPICS)
    titles: list[str] = []
    topics: list[int] = []
    seen: set[str] = set()
    while len(titles) < n:
        topic = int(rng.integers(len(names)))
        words = TOPICS[names[topic]]
        picked = rng.choice(len(words), size=int(rng.integers(2, 5)), replace=False)
        title = " ".join(words[int(i)] for i in picked).capitalize()
        if title not in seen:
            seen.add(title)
            titles.append(title)
            topics.append(topic)
    return titles, np.asarray(topics)


SUBTOPICS = 16  # tastes within a topic: what makes a user's top items a small region


def clustered(rng: np.random.Generator, centers: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """Vectors around their topic's centre, within one of its ``SUBTOPICS`` sub-centres
    (``centers`` is (topics, SUBTOPICS + 1, dim): the topic centre, then the sub-centres)."""
    sub = rng.integers(1, SUBTOPICS + 1, size=len(topics))
    noise = rng.standard_normal((len(topics), centers.shape[2]), dtype=np.float32)
    vectors = centers[topics, 0] + 0.8 * centers[topics, sub] + 0.3 * noise
    return np.asarray(vectors / np.sqrt(centers.shape[2]))


def seen_lists(
    rng: np.random.Generator,
    user_topics: np.ndarray,
    items_by_topic: list[np.ndarray],
    n_items: int,
    per_user: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of one chunk of users: 80% of a user's items from its topic, the
    rest from anywhere; within a topic, low ranks (popular items) are drawn most."""
    counts = 1 + rng.poisson(per_user - 1, size=len(user_topics))
    indptr = np.zeros(len(user_topics) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    owner = np.repeat(user_topics, counts)
    indices = rng.integers(n_items, size=len(owner)).astype(np.int32)
    on_topic = rng.random(len(owner)) < 0.8
    skew = rng.random(len(owner)) ** 2  # rank ~ u^2: a popularity head and a long tail
    for topic, members in enumerate(items_by_topic):
        rows = on_topic & (owner == topic)
        indices[rows] = members[(skew[rows] * len(members)).astype(np.int64)]
    return indptr, indices


def build_synthetic_bundle(
    spec: SeedSpec,
    out: Path,
    encoder_name: str,
    progress: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Write a verified bundle of ``spec``'s size under ``out`` (its ``current``)."""
    rng = np.random.default_rng(spec.seed)
    cfg = seed_config(spec, out, encoder_name)
    titles, title_topics = make_titles(rng, spec.titles)
    item_title = rng.integers(len(titles), size=spec.items)
    item_topics = title_topics[item_title]
    centers = rng.standard_normal((len(TOPICS), SUBTOPICS + 1, spec.dim), dtype=np.float32)

    progress(f"encoding {len(titles)} distinct titles")
    encoder = TextEncoder.load(encoder_name, cfg.encoder.max_length)
    title_vectors = encoder.encode(titles, batch_size=256)
    text = title_vectors[item_title]

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".walrus-seed-", dir=out) as work:
        progress(f"{spec.users} users: factors and seen lists")
        seen = seed_users(spec, rng, centers, item_topics, Path(work) / "users.npy")
        counts = np.bincount(seen.indices, minlength=spec.items)

        progress("item factors, cold items and the WALS state fold-in needs")
        wals = local_wals(cfg)
        wals.user_factors = np.load(Path(work) / "users.npy", mmap_mode="r")
        item_factors = clustered(rng, centers, item_topics)
        item_factors[counts == 0] = 0.0  # never seen: WALS would leave them near zero
        wals.set_item_factors(item_factors)
        p = wals.params
        wals.col_weight_values = weights_from_counts(
            counts, p.col_weights, p.weight_scale, p.weight_exponent
        )
        cold_cfg = cfg.cold_start
        factors, cold = fill_cold_items(
            item_factors, counts, text, cold_cfg.min_interactions, cold_cfg.ridge_alpha
        )
        tables = ItemTables(factors, text, np.log1p(counts).astype(np.float32), cold)

        item_titles = [titles[int(i)] for i in item_title]
        progress(f"score head on {spec.head_examples} examples")
        head = train_head(cfg, rng, wals, tables, seen, item_titles, encoder)
        hybrid = HybridModel(
            wals, tables, head, seen, cold, cfg.candidates.n_wals, cfg.candidates.n_text
        )
        trained = TrainedArtifacts(
            hybrid,
            encoder,
            IdMap(f"u{i}" for i in range(spec.users)),
            IdMap(f"i{i}" for i in range(spec.items)),
            item_titles,
            item_titles,
            attributes=attribute_arrays(
                np.random.default_rng(spec.seed + 7919), list(TOPICS), item_topics
            ),
        )
        return build_bundle(cfg, trained, out, progress)


def seed_users(
    spec: SeedSpec,
    rng: np.random.Generator,
    centers: np.ndarray,
    item_topics: np.ndarray,
    path: Path,
) -> sp.csr_matrix:
    """Every user's factors (written to ``path``, memory-mapped, in chunks) and their seen
    lists: sorted, distinct, as training writes them."""
    users = np.lib.format.open_memmap(path, "w+", np.float32, (spec.users, spec.dim))
    items_by_topic = [np.flatnonzero(item_topics == t) for t in range(len(TOPICS))]
    indptr_parts, index_parts, offset = [np.zeros(1, np.int64)], [], 0
    user_topics = rng.integers(len(TOPICS), size=spec.users)
    for start in range(0, spec.users, CHUNK):
        topics = user_topics[start : start + CHUNK]
        users[start : start + len(topics)] = clustered(rng, centers, topics)
        ptr, idx = seen_lists(rng, topics, items_by_topic, spec.items, spec.seen_per_user)
        indptr_parts.append(ptr[1:] + offset)
        index_parts.append(idx)
        offset += len(idx)
    users.flush()
    indices = np.concatenate(index_parts)
    del index_parts
    seen = sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, np.concatenate(indptr_parts)),
        shape=(spec.users, spec.items),
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    return seen


def train_head(
    cfg: PipelineConfig,
    rng: np.random.Generator,
    wals: WALS,
    tables: ItemTables,
    seen: sp.csr_matrix,
    item_titles: list[str],
    encoder: TextEncoder,
) -> ScoreHead:
    """The head learns to rank each sampled user's last seen item within the service's pool
    for a request built from the rest (``models.examples.make_head_pools``)."""
    sample = np.sort(rng.choice(seen.shape[0], size=cfg.head.max_requests, replace=False))
    rows = seen[sample].tocsr()
    last = rows.indptr[1:] - 1
    keep = np.ones(rows.nnz, dtype=bool)
    keep[last[np.diff(rows.indptr) > 1]] = False  # users with one item keep it as history
    history = sp.csr_matrix(
        (rows.data * keep, rows.indices.copy(), rows.indptr.copy()), shape=rows.shape
    )
    history.eliminate_zeros()
    positives = (rows - history).tocsr()
    positives.eliminate_zeros()
    sampled = copy.copy(wals)  # the item side (and fold-in) shared, the sampled users' rows
    sampled.user_factors = np.asarray(wals.user_factors[sample])
    pools = make_head_pools(
        cfg,
        sampled,
        tables,
        history,
        positives,
        item_titles,
        {},
        lambda q: encoder.encode(q, batch_size=256),
    )
    return ScoreHead.from_config(cfg.head).fit(pools)
