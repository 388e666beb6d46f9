"""build_request: how a request's inputs become vectors and exclusions, everywhere."""

from __future__ import annotations

import numpy as np

from models.core.features import text_profile
from models.core.hybrid import build_request


def resolve(**overrides):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 4)).astype(np.float32)
    calls = []

    def fold_in(items):
        calls.append(items.tolist())
        return np.full(3, 9.0, np.float32)

    args = dict(
        user_vector=np.ones(3, np.float32),
        seen=np.array([1, 2]),
        history=np.zeros(0, np.int64),
        exclude=np.array([7]),
        exclude_seen=True,
        query_vector=None,
        item_text_embeddings=emb,
        fold_in=fold_in,
    )
    args.update(overrides)
    return build_request(5, **args), calls, emb


def test_a_known_user_keeps_the_vector_and_excludes_seen_items():
    req, calls, emb = resolve()
    assert calls == [] and req.user_vector.tolist() == [1.0, 1.0, 1.0]
    assert req.exclude.tolist() == [1, 2, 7]
    np.testing.assert_allclose(req.profile_vector, text_profile(emb, np.array([1, 2])))


def test_history_folds_in_seen_plus_history_and_excludes_both():
    req, calls, emb = resolve(history=np.array([4, 2]))
    assert calls == [[1, 2, 4]]  # unique, seen and fresh together
    assert req.user_vector.tolist() == [9.0, 9.0, 9.0]
    assert req.exclude.tolist() == [1, 2, 4, 7]
    np.testing.assert_allclose(req.profile_vector, text_profile(emb, np.array([1, 2, 4])))


def test_exclude_seen_false_keeps_seen_items_but_not_the_explicit_exclusions():
    req, _, _ = resolve(exclude_seen=False, history=np.array([4]))
    assert req.exclude.tolist() == [7]


def test_nothing_known_gives_no_vectors():
    req, calls, _ = resolve(user_vector=None, seen=np.zeros(0, np.int64), exclude=np.zeros(0))
    assert calls == [] and req.user_vector is None and req.profile_vector is None
    assert req.exclude.tolist() == []
