"""The signals blend test: each signal against a hand-computed answer, a blend that must show
a signal carrying the truth, and docs/evaluation.md showing the kept run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.signals import WINDOWS, blend_test, co_occurrence, popularity_near, report
from models.data.splits import Split

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


def test_co_occurrence_sums_the_cosines_with_the_history():
    # items 0 and 1 share users 0 and 1; item 2 has user 2 only
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=float))
    signal = co_occurrence(train)
    # user 2's history is item 2: cos(0, 2) = 1 / (sqrt(3) sqrt(2)), cos(1, 2) = 0
    np.testing.assert_allclose(signal(2, np.array([0, 1])), [1 / np.sqrt(6), 0.0])
    # user 3's history is items 0 and 2: item 1 scores cos(1, 0) + cos(1, 2)
    np.testing.assert_allclose(signal(3, np.array([1])), [2 / np.sqrt(6)])


def test_popularity_near_counts_within_the_window_of_the_users_latest():
    t0 = 1_000_000_000.0
    times = sp.csr_matrix(
        np.array(
            [
                [t0, 0, 0],  # user 0: latest t0
                [t0 + DAY, t0 + 400 * DAY, 0],  # item 1 at t0 + 400 days
                [t0 - 3 * DAY, 0, t0 + 2 * DAY],
            ]
        )
    )
    two_weeks = popularity_near(times, WINDOWS["2 weeks"])
    # item 0 near t0: t0, t0 + 1 day, t0 - 3 days; item 1: none; item 2: t0 + 2 days
    np.testing.assert_allclose(two_weeks(0, np.array([0, 1, 2])), np.log1p([3, 0, 1]))
    # user 1's latest is t0 + 400 days: only item 1's own interaction is near it
    np.testing.assert_allclose(two_weeks(1, np.array([0, 1, 2])), np.log1p([0, 1, 0]))


def test_a_signal_that_holds_the_truth_lifts_the_blend_and_noise_does_not():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 40, 60, 30
    train = sp.csr_matrix((n_users, n_items))
    pool = np.stack([rng.permutation(n_items)[:n] for _ in range(n_users)])
    wals = rng.normal(size=(n_users, n))
    truth = np.zeros((n_users, n_items))
    relevant = [p[rng.permutation(n)[:3]] for p in pool]
    for user, items in enumerate(relevant):
        truth[user, items] = 1.0
    split = Split("validation", train, sp.csr_matrix(truth))
    users = np.arange(n_users)
    oracle = np.stack([np.isin(p, r).astype(float) for p, r in zip(pool, relevant, strict=True)])
    lifted = blend_test(wals, oracle, split, users, pool)
    assert lifted["ratio"] > 1.2 and all(f["beta"] > 0 for f in lifted["folds"])
    constant = blend_test(wals, np.ones_like(wals), split, users, pool)
    assert constant["ratio"] == 1.0 and constant["best_in_sample"] == 1.0


def test_the_docs_table_is_the_kept_run():
    results = json.loads((REPO / "docs/results/signals/signals.json").read_text())
    docs = (REPO / "docs/evaluation.md").read_text()
    assert report(results) in docs
    # the sentence beside the table
    assert "stays below ×1.01" in docs
    assert max(row["best_in_sample"] for row in results["rows"].values()) < 1.01
