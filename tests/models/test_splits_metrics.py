"""Splits partition the data as documented; metrics match hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.data.splits import cold_item_split, holdout_split, user_split
from models.metrics import evaluate_scores


def test_holdout_partitions_each_user(tiny_matrix):
    split = holdout_split(tiny_matrix, 0.25, seed=0)
    assert (split.train + split.test - tiny_matrix).nnz == 0
    assert split.train.multiply(split.test).nnz == 0
    counts = np.diff(tiny_matrix.indptr)
    train_counts = np.diff(split.train.indptr)
    assert np.all(train_counts[counts >= 1] >= 1)
    assert holdout_split(tiny_matrix, 0.25, seed=0).test.nnz == split.test.nnz
    assert (holdout_split(tiny_matrix, 0.25, seed=1).test != split.test).nnz > 0


def test_user_split_hides_whole_users(tiny_matrix):
    split = user_split(tiny_matrix, 0.2, 0.5, seed=0)
    held = split.held_out_users
    assert len(held) == round(0.2 * (np.diff(tiny_matrix.indptr) >= 2).sum())
    assert split.train[held].nnz == 0
    assert (split.train + split.test + split.fold_in - tiny_matrix).nnz == 0
    assert np.all(np.diff(split.fold_in.indptr)[held] >= 1)


def test_cold_items_have_no_training_data(tiny_matrix):
    split = cold_item_split(tiny_matrix, 0.2, seed=0)
    assert split.train[:, split.cold_items].nnz == 0
    assert set(split.test.indices) <= set(split.cold_items)
    assert (split.train + split.test - tiny_matrix).nnz == 0


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_bad_fractions(tiny_matrix, bad):
    with pytest.raises(ValueError, match="strictly between"):
        holdout_split(tiny_matrix, bad)


def test_metrics_by_hand():
    # one user, 6 items; item 0 is a training item and must be skipped
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], dtype=float))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 1, 0]], dtype=float))
    scores = np.array([[9.0, 5, 4, 3, 2, 1]])  # ranking after exclusion: 1,2,3,4,5
    out = evaluate_scores(lambda rows: scores[rows], train, test, ks=(1, 2, 4))
    assert out["recall@1"] == 0.0
    assert out["recall@2"] == pytest.approx(1 / 2)  # hit at rank 2, normalised by min(2, 2)
    assert out["recall@4"] == pytest.approx(2 / 2)
    idcg = 1 + 1 / np.log2(3)
    assert out["ndcg@2"] == pytest.approx((1 / np.log2(3)) / idcg)
    assert out["ndcg@4"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / idcg)
    assert out["users"] == 1


def test_metrics_perfect_and_shape_check():
    test = sp.csr_matrix(np.eye(4))
    train = sp.csr_matrix((4, 4))
    out = evaluate_scores(lambda rows: np.eye(4)[rows], train, test, ks=(1,))
    assert out["recall@1"] == 1.0 and out["ndcg@1"] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_scores(lambda r: r, train, sp.csr_matrix((3, 4)))
