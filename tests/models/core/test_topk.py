"""The one top-k against a full sort."""

from __future__ import annotations

import numpy as np

from models.core.topk import top_k


def test_matches_a_full_stable_sort_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(20, 50)).astype(np.float32)  # many ties
    for k in (1, 7, 50, 80):
        got = top_k(scores, k)
        want = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, 50)]
        # same scores in the same order; ties inside the top k in index order
        np.testing.assert_array_equal(
            np.take_along_axis(scores, got, 1), np.take_along_axis(scores, want, 1)
        )
        for row in range(20):
            for a, b in zip(got[row][:-1], got[row][1:], strict=True):
                assert scores[row, a] > scores[row, b] or a < b


def test_one_dimensional_and_empty():
    scores = np.array([0.1, 0.9, 0.5, 0.9])
    assert top_k(scores, 2).tolist() == [1, 3]
    assert top_k(scores, 0).shape == (0,)
    assert top_k(np.zeros((3, 4)), 0).shape == (3, 0)
