"""One pool rule: the service's (search functions, one request) equals head training's
(exact, batched), and the batched service search equals the per-request one."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.candidates import candidate_pools, serve_pool
from models.core.hybrid import ItemTables, Request, exact_search


def tables(n: int = 300, seed: int = 0) -> ItemTables:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 6)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return ItemTables(rng.normal(size=(n, 4)).astype(np.float32), t,
                      rng.random(n).astype(np.float32))  # fmt: skip


def random_requests(tab: ItemTables, n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        user = rng.normal(size=4).astype(np.float32) if kind in (0, 2) else None
        query = rng.normal(size=6).astype(np.float32) if kind in (1, 2) else None
        profile = tab.item_text_embeddings[rng.integers(0, tab.n_items)] if kind == 3 else None
        # exclusions both inside and far outside the rankings' heads
        exclude = np.unique(rng.integers(0, tab.n_items, size=rng.integers(0, 60)))
        out.append(Request(int(rng.integers(0, 30)), user, query, profile, exclude))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_pools_equal_the_service_pools(seed):
    tab = tables(seed=seed)
    reqs = random_requests(tab, 40, seed)
    searches = {
        "wals": exact_search(tab.item_factors),
        "text": exact_search(tab.item_text_embeddings),
    }
    batched = candidate_pools(tab, reqs, n_wals=12, n_text=9)
    for req, got in zip(reqs, batched, strict=True):
        excluded = np.zeros(tab.n_items, bool)
        excluded[req.exclude] = True
        served = serve_pool(req, excluded, searches, n_wals=12, n_text=9)
        assert got == served  # same items, same sources, same order
        assert not any(excluded[i] for i in served)


def test_each_source_gives_exactly_n_allowed_items():
    """The old service over-fetched n + |excluded| and kept every allowed item: with
    exclusions outside the ranking's head its pools were larger than training's."""
    tab = tables()
    user = np.ones(4, np.float32)
    ranking = exact_search(tab.item_factors)(user, tab.n_items)[0]
    far = ranking[-20:]  # excluded, but nowhere near the top
    req = Request(0, user_vector=user, exclude=far)
    excluded = np.zeros(tab.n_items, bool)
    excluded[far] = True
    pool = serve_pool(req, excluded, {"wals": exact_search(tab.item_factors)}, 10, 10)
    assert list(pool) == ranking[:10].tolist()


def test_a_short_index_answer_is_fetched_again():
    tab = tables()
    full = exact_search(tab.item_factors)
    calls = []

    def padded(vector, k):  # an ANN index that answers half of what it is asked, padded
        calls.append(k)
        ids, scores = full(vector, k)
        ids = ids.copy()
        ids[len(ids) // 2 :] = -1
        return ids, scores

    user = np.ones(4, np.float32)
    req = Request(0, user_vector=user)
    pool = serve_pool(req, np.zeros(tab.n_items, bool), {"wals": padded}, 10, 10)
    assert len(pool) == 10 and len(calls) >= 2
