"""Business rules on the request path (``models.core``): filtered pools against a brute-force
oracle for every kind of searcher, exactly k whenever k items pass, pages of one ranking,
diversity, and explanation terms that sum to the WALS score."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.core import candidates
from models.core.candidates import candidate_pools
from models.core.features import COLUMN
from models.core.fold_in import contributions, fold_in_user
from models.core.hybrid import PoolSizes, recommend_batch
from models.core.params import WALSParams
from models.core.types import Diversity, ItemTables, Request, SearchBatch
from tests.support.candidates import OverFetching, exact, oracle, random_requests, tables


class LossyFilter:
    """Filters inside the search but loses items, as HNSW does under a restrictive filter:
    it answers only the first third of every k."""

    def __init__(self, tab: ItemTables) -> None:
        self.inner = exact(tab)
        self.filtering = self.inner.filtering

    def search(self, name: str, batch: SearchBatch) -> np.ndarray:
        ids = self.inner.search(name, batch).copy()
        ids[:, max(1, ids.shape[1] // 3) :] = -1
        return ids


def with_filters(tab: ItemTables, requests: list[Request], seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for i, r in enumerate(requests):
        share = (0.3, 0.05, 1.0, 0.01)[i % 4]
        out.append(replace(r, allowed=rng.random(tab.n_items) < share))
    return out


@pytest.mark.parametrize("searcher", ["exact", "over-fetching", "lossy"])
@pytest.mark.parametrize("inside_below", [0, 10_000])
def test_a_filtered_pool_is_the_oracle_among_the_items_it_allows(
    searcher, inside_below, monkeypatch
):
    """The pool of a filtered request holds each source's best allowed items, whether the
    index filters inside (EXACT_BELOW 0), over-fetches, or loses items under the filter."""
    monkeypatch.setattr(candidates, "EXACT_BELOW", inside_below)
    tab = tables(400, seed=5)
    reqs = with_filters(tab, random_requests(tab, 24, seed=8), seed=2)
    chosen = {"exact": exact, "over-fetching": OverFetching, "lossy": LossyFilter}[searcher]
    for req, got in zip(reqs, candidate_pools(reqs, tab, chosen(tab), 12, 9), strict=True):
        banned = set(np.flatnonzero(~req.allowed).tolist()) | set(req.exclude.tolist())
        expected = oracle(tab, replace(req, exclude=np.array(sorted(banned))), 12, 9)
        assert {item: set(found) for item, found in got.items()} == expected
        assert not set(got) & banned


def head(features: np.ndarray) -> np.ndarray:
    return features[:, COLUMN["wals_score"]] + features[:, COLUMN["query_score"]]


def answer(tab, request, sizes=PoolSizes(10, 10), searcher=None):
    return recommend_batch(tab, [request], searcher or exact(tab), head, sizes)[0]


def test_exactly_k_whenever_k_items_pass_and_all_of_them_when_fewer():
    tab = tables(500, seed=1)
    user = np.random.default_rng(0).normal(size=4).astype(np.float32)
    allowed = np.zeros(tab.n_items, dtype=bool)
    allowed[np.random.default_rng(1).choice(tab.n_items, 7, replace=False)] = True
    five = answer(tab, Request(5, user_vector=user, allowed=allowed))
    assert len(five.items) == 5 and allowed[five.items].all()
    everything = answer(tab, Request(10, user_vector=user, allowed=allowed))
    assert sorted(everything.items.tolist()) == np.flatnonzero(allowed).tolist()
    # the exclusions come out of what passes; nothing known about the request: popular
    excluded = np.flatnonzero(allowed)[:2]
    popular = answer(tab, Request(10, exclude=excluded, allowed=allowed))
    assert len(popular.items) == 5 and allowed[popular.items].all()
    assert not np.isin(popular.items, excluded).any()
    assert len(answer(tab, Request(3, user_vector=user, allowed=~allowed)).items) == 3


@pytest.mark.parametrize("kind", ["user", "query", "popular"])
def test_pages_are_slices_of_one_ranking(kind):
    """Consecutive pages never repeat, and together equal one request with the larger k,
    across passes of the pool window (10 here) too."""
    tab = tables(300, seed=2)
    rng = np.random.default_rng(4)
    vectors = {
        "user": {"user_vector": rng.normal(size=4).astype(np.float32)},
        "query": {"query_vector": rng.normal(size=6).astype(np.float32)},
        "popular": {},
    }[kind]
    allowed = rng.random(tab.n_items) < 0.5
    base = Request(7, allowed=allowed, exclude=np.arange(5), **vectors)
    pages = [answer(tab, replace(base, offset=o)).items for o in range(0, 42, 7)]
    whole = answer(tab, replace(base, k=42)).items
    assert np.concatenate(pages).tolist() == whole.tolist()
    assert len(set(whole.tolist())) == 42 and allowed[whole].all()


def test_a_cap_per_value_holds_and_still_gives_k_items():
    tab = tables(300, seed=3)
    codes = np.arange(tab.n_items) % 6
    user = np.random.default_rng(5).normal(size=4).astype(np.float32)
    capped = Request(12, user_vector=user, diversity=Diversity(codes, 2))
    got = answer(tab, capped).items
    assert len(got) == 12 and np.bincount(codes[got]).max() <= 2
    # pages share one cap: 6 values x 2 places, then no more items at all
    pages = [answer(tab, replace(capped, k=5, offset=o)).items for o in (0, 5, 10)]
    assert np.concatenate(pages).tolist() == got.tolist()
    # more places than the caps allow: all that the caps admit, no more
    assert len(answer(tab, replace(capped, k=20)).items) == 12


def test_mmr_spreads_the_answer_and_zero_changes_nothing():
    tab = tables(300, seed=4)
    query = tab.item_text_embeddings[0] * 3
    wide = PoolSizes(40, 40)  # MMR chooses 10 among a pool of 40
    plain = answer(tab, Request(10, query_vector=query), wide).items
    same = answer(tab, Request(10, query_vector=query, diversity=Diversity(mmr=0.0)), wide)
    assert same.items.tolist() == plain.tolist()
    mmr = Diversity(mmr=0.7)
    spread = answer(tab, Request(10, query_vector=query, diversity=mmr), wide).items
    assert len(set(spread.tolist())) == 10 and spread[0] == plain[0]

    def closeness(items: np.ndarray) -> float:
        e = tab.item_text_embeddings[items]
        sims = e @ e.T
        return float(sims[np.triu_indices(len(items), 1)].mean())

    assert closeness(spread) < closeness(plain)
    pages = [
        answer(tab, Request(5, query_vector=query, offset=o, diversity=mmr), wide).items
        for o in (0, 5)
    ]
    assert np.concatenate(pages).tolist() == spread.tolist()


def test_explanation_terms_sum_to_the_wals_score_and_the_top_one_matters():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(80, 8)).astype(np.float32)
    gramian = factors.T.astype(np.float64) @ factors
    col_weights = rng.random(80) + 0.5
    params = WALSParams(dim=8, regularization=0.1, unobserved_weight=0.05)
    history = np.array([3, 7, 11, 20, 42])
    targets = np.arange(50, 60)
    user = fold_in_user(factors, gramian, col_weights, params, history)
    items, terms = contributions(factors, gramian, col_weights, params, history, factors[targets])
    np.testing.assert_allclose(terms.sum(1), factors[targets] @ user, atol=1e-5)
    assert items.tolist() == sorted(history.tolist())
    for row, target in enumerate(targets.tolist()):
        top = items[np.argmax(terms[row])]
        without = fold_in_user(factors, gramian, col_weights, params, history[history != top])
        assert factors[target] @ without < factors[target] @ user
