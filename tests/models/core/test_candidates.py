"""One pool rule, planned once per batch: checked against a brute-force oracle, for a
searcher that filters inside the search (offline) and one that over-fetches (the service's
GPU copies, an ANN index answering short), alone and in batches."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.candidates import candidate_pools, pool_sizes, search_vectors
from models.core.types import Request
from tests.support.candidates import OverFetching, exact, oracle, random_requests, tables


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pools_follow_the_rule_and_match_an_oracle(seed):
    tab = tables(seed=seed)
    reqs = random_requests(tab, 40, seed)
    for req, got in zip(reqs, candidate_pools(reqs, tab, exact(tab), 12, 9), strict=True):
        assert {item: set(found) for item, found in got.items()} == oracle(tab, req, 12, 9)
        assert not set(got) & set(req.exclude.tolist())
        for name in search_vectors(req):  # ranks count allowed items only: 0, 1, 2, ...
            ranks = sorted(found[name] for found in got.values() if name in found)
            assert ranks == list(range(pool_sizes(req, 12, 9)[name]))


@pytest.mark.parametrize("seed", [0, 1])
def test_over_fetching_and_filtering_searchers_build_the_same_pools(seed):
    tab = tables(seed=seed)
    reqs = random_requests(tab, 40, seed)
    filtered = candidate_pools(reqs, tab, exact(tab), 12, 9)
    over = candidate_pools(reqs, tab, OverFetching(tab), 12, 9)
    assert filtered == over  # same items, same sources, same ranks, same order


def test_a_request_gets_the_same_pool_alone_and_in_a_batch():
    tab = tables()
    reqs = random_requests(tab, 24, 5)
    together = candidate_pools(reqs, tab, OverFetching(tab, 0.5), 12, 9)
    alone = [candidate_pools([r], tab, OverFetching(tab, 0.5), 12, 9)[0] for r in reqs]
    assert together == alone


def test_each_source_gives_exactly_n_allowed_items():
    """Over-fetching n + |excluded| must still keep only the first n allowed items: with
    exclusions far outside the ranking's head the pool would otherwise grow."""
    tab = tables()
    user = np.ones(4, np.float32)
    ranking = np.argsort(-(tab.item_factors @ user), kind="stable")
    req = Request(0, user_vector=user, exclude=np.sort(ranking[-20:]))
    (pool,) = candidate_pools([req], tab, OverFetching(tab), 10, 10)
    assert list(pool) == ranking[:10].tolist()


def test_short_answers_are_fetched_again_together():
    """An index answering half of every k: the rows that came up short are searched again,
    in one call per round, until each pool is full."""
    tab = tables()
    rng = np.random.default_rng(3)
    reqs = [Request(0, user_vector=rng.normal(size=4).astype(np.float32)) for _ in range(16)]
    searcher = OverFetching(tab, 0.5)
    pools = candidate_pools(reqs, tab, searcher, 10, 10)
    assert all(len(p) == 10 for p in pools)
    assert searcher.calls == [16, 16]  # the first round, then every short row at once
