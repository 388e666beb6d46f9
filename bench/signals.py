"""Signals the bundle does not carry: would they lift WALS's ranking? A blend test.

On `walrus tune`'s validation split (configs/movielens.toml; no test pair involved), WALS is
fitted with the config's values, and each validation user's pool is WALS's top
``candidates.n_wals`` items (training items excluded): the pool the head reranks. A signal
is added to WALS's score standardised within the pool, ``z(wals) + beta * z(signal)``.
``beta`` (0 to 2) is chosen on one half of the users and scored on the other half, then the
halves swap, so no ``beta`` is scored on users it was chosen on. 1.000 means the signal
adds nothing WALS does not already rank by. The last column is the best ``beta`` scored on
the users it was chosen on: optimistic, an upper bound of what a blend could show.

- **co-occurrence**: item-kNN, the summed cosine of the item with the user's training items
  on the binarised training matrix (what a neighbour list in the bundle would carry).
- **popularity near the user's time**: the item's training interactions within a window of
  the user's latest training interaction (needs a ``timestamp`` column): what a "popular
  when the user is active" (recency) feature would carry.

A linear blend is a test, not a bound: the head could use a signal non-linearly. It is the
check to pass before a signal is carried through the bundle, the engine and the live events.

    python -m bench.signals --config configs/movielens.toml
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.common import Benchmark
from bench.validation import config_argument, validation_data
from models.config import PipelineConfig
from models.core.features import standardized
from models.data.dataset import Dataset
from models.data.io import read_interactions
from models.data.splits import Split
from models.metrics import evaluate_scores
from models.pipeline import binarize, fit_wals

BETAS = np.round(np.arange(0.0, 2.01, 0.1), 2)
YEAR_SECONDS = 365.25 * 86400
WINDOWS = {"2 weeks": 14 * 86400, "3 months": YEAR_SECONDS / 4, "1 year": YEAR_SECONDS}
Signal = Callable[[int, np.ndarray], np.ndarray]  # (user row, pool) -> (len(pool),) values


def pools(scores: np.ndarray, train: sp.csr_matrix, users: np.ndarray, n: int) -> np.ndarray:
    """(len(users), n) WALS's top ``n`` items per user, best first, training items excluded."""
    out = np.empty((len(users), n), dtype=np.int64)
    for row, user in enumerate(users):
        s = scores[user].copy()
        s[train.indices[train.indptr[user] : train.indptr[user + 1]]] = -np.inf
        top = np.argpartition(-s, n)[:n]
        out[row] = top[np.argsort(-s[top])]
    return out


def co_occurrence(train: sp.csr_matrix) -> Signal:
    """Item-kNN: the item's summed cosine with the user's training items."""
    a = binarize(train).tocsc()
    norms = np.sqrt(np.asarray(a.multiply(a).sum(0))).ravel()
    norms[norms == 0] = 1.0
    normed = sp.csr_matrix(a.multiply(1.0 / norms[None, :]))
    cosine = (normed.T @ normed).tocsr()

    def signal(user: int, pool: np.ndarray) -> np.ndarray:
        history = train.indices[train.indptr[user] : train.indptr[user + 1]]
        return np.asarray(cosine[history][:, pool].sum(0)).ravel()

    return signal


def interaction_times(
    dataset: Dataset, cfg: PipelineConfig, train: sp.csr_matrix
) -> sp.csr_matrix | None:
    """(users, items) timestamps of ``train``'s pairs (seconds), from the interactions file;
    ``None`` when it has no ``timestamp`` column."""
    frame = read_interactions(cfg.data.interactions, cfg.data.rating_threshold)
    if "timestamp" not in frame.columns:
        return None
    users, _ = dataset.users.lookup(frame["user_id"].astype(str).tolist())
    items, _ = dataset.items.lookup(frame["item_id"].astype(str).tolist())
    times = sp.csr_matrix((frame["timestamp"].to_numpy(float), (users, items)), train.shape)
    return sp.csr_matrix(times.multiply(binarize(train)))


def popularity_near(times: sp.csr_matrix, window: float) -> Signal:
    """log1p of the item's training interactions within ``window`` seconds of the user's
    latest training interaction."""
    by_item = times.tocsc()
    by_item.sort_indices()

    def signal(user: int, pool: np.ndarray) -> np.ndarray:
        own = times.data[times.indptr[user] : times.indptr[user + 1]]
        when = float(own.max()) if len(own) else 0.0
        counts = [
            np.count_nonzero(
                np.abs(by_item.data[by_item.indptr[j] : by_item.indptr[j + 1]] - when) <= window
            )
            for j in pool
        ]
        return np.log1p(np.asarray(counts, dtype=np.float64))

    return signal


def blend_test(
    wals: np.ndarray, signal: np.ndarray, split: Split, users: np.ndarray, pool: np.ndarray
) -> dict[str, Any]:
    """Cross-fitted ``z(wals) + beta * z(signal)`` over the pools: Recall@20 of each half
    with the ``beta`` chosen on the other, over WALS's own order on that half."""
    z_wals = np.stack([standardized(w) for w in wals])
    z_signal = np.stack([standardized(s) for s in signal])
    halves = np.arange(len(users)) % 2
    where = {int(u): r for r, u in enumerate(users)}

    def recall(rows: np.ndarray, beta: float) -> float:
        keep = np.isin(np.arange(split.test.shape[0]), users[rows]).astype(float)
        test = sp.csr_matrix(sp.diags(keep) @ split.test)

        def score(batch: np.ndarray) -> np.ndarray:
            out = np.full((len(batch), split.test.shape[1]), -np.inf, dtype=np.float32)
            for b, user in enumerate(batch):
                r = where[int(user)]
                out[b, pool[r]] = z_wals[r] + beta * z_signal[r]
            return out

        return float(evaluate_scores(score, split.train, test, (20,))["recall@20"])

    folds = []
    for chosen_on in (0, 1):
        fit, held = np.flatnonzero(halves == chosen_on), np.flatnonzero(halves != chosen_on)
        beta = max(BETAS, key=lambda b: recall(fit, float(b)))
        folds.append({"beta": float(beta), "ratio": recall(held, float(beta)) / recall(held, 0.0)})
    everyone = np.arange(len(users))
    best = max(recall(everyone, float(b)) for b in BETAS) / recall(everyone, 0.0)
    return {
        "folds": folds,
        "ratio": float(np.mean([f["ratio"] for f in folds])),
        "best_in_sample": best,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = args.config
    cfg, dataset, split = validation_data(config)
    model = fit_wals(cfg, split.train, dataset.weights is not None)
    scores = model.user_factors @ model.item_factors.T
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    pool = pools(scores, split.train, users, cfg.candidates.n_wals)
    wals = np.take_along_axis(scores[users], pool, axis=1)
    times = interaction_times(dataset, cfg, split.train)
    signals = {"co-occurrence (item-kNN)": co_occurrence(split.train)}
    if times is None:
        print(f"{cfg.data.interactions} has no timestamp column: no popularity-near-time rows")
    else:
        signals |= {
            f"popularity within {name} of the user's latest": popularity_near(times, seconds)
            for name, seconds in WINDOWS.items()
        }
    rows = {}
    for name, signal in signals.items():
        values = np.stack([signal(int(u), p) for u, p in zip(users, pool, strict=True)])
        rows[name] = blend_test(wals, values, split, users, pool)
        print(name, rows[name], flush=True)
    return {"config": str(config), "users": len(users), "rows": rows}


def row(name: str, result: dict[str, Any]) -> str:
    """One signal's line of the table."""
    betas = ", ".join(f"{fold['beta']:.1f}" for fold in result["folds"])
    ratios = ", ".join(f"{fold['ratio']:.3f}" for fold in result["folds"])
    return (
        f"| {name} | {betas} | {ratios} | {result['ratio']:.3f} | {result['best_in_sample']:.3f} |"
    )


def report(result: dict[str, Any]) -> str:
    lines = [
        "| signal | beta (chosen on each half) | Recall@20 ÷ WALS (the other half) | mean "
        "| best beta on everyone (optimistic) |",
        "|---|---|---|---|---|",
        *(row(name, r) for name, r in result["rows"].items()),
    ]
    return "\n".join(lines)


BENCHMARK = Benchmark("signals", __doc__ or "", config_argument, run, report)
main = BENCHMARK.main


if __name__ == "__main__":
    raise SystemExit(main())
