"""Score head, features, cold-start map and the request flow, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models.cold_start import RidgeMap, fill_cold_items
from models.core.candidates import ExactSearch
from models.core.features import COLUMN, FEATURES, N_FEATURES, build_features, text_profile
from models.core.hybrid import PoolSizes, recommend_batch, reserve_cold
from models.core.types import ItemTables, Request, SearchBatch
from models.head import RankingPools, ScoreHead, pool_ndcg


def test_feature_layout_and_flags():
    v = np.arange(6, dtype=np.float32).reshape(3, 2)
    t = np.eye(3, dtype=np.float32)
    pop = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    cold = np.array([True, False, False])
    u, q = np.array([1.0, 2.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    ranks = {"wals": np.array([0, -1, 2]), "text": np.array([-1, 0, -1])}
    f = build_features(u, q, None, v, t, pop, cold, ranks)
    assert f.shape == (3, N_FEATURES)
    col = dict(zip(FEATURES, f.T, strict=True))
    np.testing.assert_allclose(col["wals_score"], v @ u)
    np.testing.assert_allclose(col["query_score"], t @ q)
    z = (v @ u - (v @ u).mean()) / (v @ u).std()
    np.testing.assert_allclose(col["wals_score_z"], z, rtol=1e-6)
    np.testing.assert_allclose(col["wals_rank"], [1.0, 0.0, 0.5])  # 1/log2(2 + rank)
    np.testing.assert_allclose(col["text_rank"], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(col["log_popularity"], pop)
    np.testing.assert_array_equal(col["cold"], [1, 0, 0])
    assert (col["profile_score"] == 0).all() and (col["history_present"] == 0).all()
    assert (col["user_known"] == 1).all() and (col["query_present"] == 1).all()
    g = build_features(None, None, q, v, t, pop, cold, {})
    gcol = dict(zip(FEATURES, g.T, strict=True))
    for name in (
        "wals_score",
        "wals_score_z",
        "query_score",
        "user_known",
        "query_present",
        "wals_rank",
        "text_rank",
    ):
        assert (gcol[name] == 0).all(), name
    np.testing.assert_allclose(gcol["profile_score"], t @ q)
    assert (gcol["history_present"] == 1).all()


def pools_with_rule(rng, n, size=6, width=4):
    """Pools whose one positive has a larger feature 0, padded to different sizes."""
    rows = []
    for _ in range(n):
        m = int(rng.integers(3, size + 1))
        x = rng.normal(size=(m, width)).astype(np.float32)
        y = np.zeros(m, bool)
        y[int(rng.integers(m))] = True
        x[y, 0] += 3.0
        rows.append((x, y))
    return RankingPools.stack(rows, width)


def test_text_profile_is_unit_mean():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(text_profile(emb, np.array([0, 1])), [2**-0.5, 2**-0.5], atol=1e-6)
    assert not text_profile(emb, np.array([], dtype=np.int64)).any()


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_head_learns_a_known_rule(loss):
    """Positives have a larger feature 0: a trained head must rank them first in their pool,
    padding never wins, and the importances name feature 0 as the one that matters."""
    rng = np.random.default_rng(0)
    pools = pools_with_rule(rng, 600)
    head = ScoreHead(hidden=16, epochs=40, learning_rate=1e-2, loss=loss, seed=0)
    head.fit(pools, feature_names=["signal", "a", "b", "c"])
    test = pools_with_rule(rng, 200)
    scores = head._pool_scores(test.features, test.mask)
    assert (scores.argmax(1) == test.labels.argmax(1)).mean() > 0.8
    assert pool_ndcg(scores, test) > 0.85
    assert head.history["validation_loss"][-1] < head.history["validation_loss"][0]
    assert max(head.importances, key=head.importances.get) == "signal"
    assert head.importances["signal"] > 0.3 and abs(head.importances["a"]) < 0.05


def test_pool_ndcg_against_hand_computed_values():
    pools = RankingPools.stack(
        [
            (np.zeros((3, 1), np.float32), np.array([False, True, False])),
            (np.zeros((2, 1), np.float32), np.array([True, True])),
        ],
        1,
    )
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 9.0]])  # the padded 9.0 must not count
    assert pool_ndcg(scores, pools) == pytest.approx((1 / np.log2(3) + 1.0) / 2)


def test_head_numpy_matches_torch_and_roundtrips(tmp_path):
    import torch

    rng = np.random.default_rng(1)
    pools = pools_with_rule(rng, 50, width=5)
    head = ScoreHead(hidden=8, loss="bpr", epochs=3, seed=1).fit(pools, feature_names="abcde")
    x = rng.normal(size=(7, 5)).astype(np.float32)
    with torch.no_grad():
        ref = head.torch_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(head.score(x), ref, atol=1e-5)
    head.save(tmp_path)
    loaded = ScoreHead.load(tmp_path)
    np.testing.assert_array_equal(loaded.score(x), head.score(x))
    assert loaded.importances == head.importances and set(loaded.importances) == set("abcde")
    with pytest.raises(ValueError, match="the head needs"):
        head.fit(pools.take(np.array([0])))
    unlabelled = RankingPools(pools.features, pools.mask, np.zeros_like(pools.labels))
    with pytest.raises(ValueError, match="positive"):
        head.fit(unlabelled)
    with pytest.raises(ValueError, match="loss"):
        ScoreHead(loss="hinge")  # type: ignore[arg-type]


def test_ridge_map_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    w = rng.normal(size=(5, 3))
    y = x @ w + 0.5
    ridge = RidgeMap(alpha=1e-6).fit(x, y)
    np.testing.assert_allclose(ridge.predict(x[:10]), y[:10], atol=1e-4)


def test_fill_cold_items_only_touches_cold_rows():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(30, 4)).astype(np.float32)
    factors = (text @ rng.normal(size=(4, 2))).astype(np.float32)
    counts = np.ones(30)
    counts[:5] = 0
    broken = factors.copy()
    broken[:5] = 0
    filled, cold = fill_cold_items(broken, counts, text, min_interactions=1, alpha=1e-6)
    assert cold[:5].all() and not cold[5:].any()
    np.testing.assert_array_equal(filled[5:], broken[5:])
    np.testing.assert_allclose(filled[:5], factors[:5], atol=1e-3)


def _tables(n=40, wd=3, td=4, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, td)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return ItemTables(
        rng.normal(size=(n, wd)).astype(np.float32), t, rng.random(n).astype(np.float32)
    )


def exact(tables):
    return ExactSearch({"wals": tables.item_factors, "text": tables.item_text_embeddings})


def recommend(tables, req, head, searcher=None, n_wals=100, n_text=100, cold_every=0):
    """One request through the batched core, exact search unless told otherwise."""
    sizes = PoolSizes(n_wals, n_text, cold_every)
    return recommend_batch(tables, [req], searcher or exact(tables), head, sizes)[0]


def best(matrix, vector, k):
    return np.argsort(-(matrix @ vector), kind="stable")[:k]


def dot_head(features):
    # scores = u.v + q.t: a head whose ranking we can predict
    return features[:, COLUMN["wals_score"]] + features[:, COLUMN["query_score"]]


def test_recommend_exactly_k_with_exclusions_and_over_fetch():
    tables = _tables()
    user = np.array([1.0, 0.5, -0.2], np.float32)
    exclude = np.sort(best(tables.item_factors, user, 15))  # the 15 best WALS items
    req = Request(k=10, user_vector=user, exclude=exclude)
    rec = recommend(tables, req, dot_head, n_wals=5, n_text=5)
    assert len(rec.items) == 10 and not set(rec.items) & set(exclude)
    assert all(s == ["wals"] for s in rec.sources)
    # oracle: the best 10 by u.v among non-excluded items
    scores = tables.item_factors @ user
    scores[exclude] = -np.inf
    assert list(rec.items) == list(np.argsort(-scores)[:10])


def test_recommend_fills_with_popular_and_caps_at_catalog():
    tables = _tables(n=12)
    rec = recommend(tables, Request(k=50, exclude=np.array([0, 1])), dot_head)
    assert len(rec.items) == 10  # 12 items, 2 excluded
    assert all(s == ["popular"] for s in rec.sources)
    order = [i for i in tables.popular_order if i not in (0, 1)]
    assert list(rec.items) == order  # most popular first


def test_recommend_marks_both_sources():
    tables = _tables()
    q = tables.item_text_embeddings[3]
    user = tables.item_factors[3]
    req = Request(k=5, user_vector=user, query_vector=q)
    rec = recommend(tables, req, dot_head, n_wals=5, n_text=5)
    assert rec.sources[list(rec.items).index(3)] == ["wals", "text"]
    # every other item's sources say which top-5 it came from
    top_wals = set(best(tables.item_factors, user, 5).tolist())
    top_text = set(best(tables.item_text_embeddings, q, 5).tolist())
    for item, sources in zip(rec.items.tolist(), rec.sources, strict=True):
        assert ("wals" in sources) == (item in top_wals)
        assert ("text" in sources) == (item in top_text)
    assert np.all(np.diff(rec.scores) <= 0)


def test_popular_items_top_up_a_request_with_a_user_vector():
    tables = _tables(n=12)
    user = np.array([1.0, 0.0, 0.0], np.float32)
    exclude = np.arange(6)
    req = Request(k=6, user_vector=user, exclude=exclude)
    rec = recommend(tables, req, dot_head, n_wals=2, n_text=2)
    assert len(rec.items) == 6 and not set(rec.items.tolist()) & set(exclude.tolist())
    assert sorted(rec.items.tolist()) == list(range(6, 12))  # all that is left
    assert {"wals"} <= {s for src in rec.sources for s in src}


def test_excluding_every_item_returns_nothing():
    tables = _tables(n=8)
    req = Request(k=5, user_vector=np.ones(3, np.float32), exclude=np.arange(8))
    rec = recommend(tables, req, dot_head)
    assert len(rec.items) == 0 and rec.sources == []


def test_search_ignores_faiss_padding():
    tables = _tables(n=5)

    class Padded:  # FAISS pads a short answer with -1
        filtering = frozenset()

        def search(self, name: str, batch: SearchBatch) -> np.ndarray:
            ids = exact(tables).search(name, batch)
            return np.concatenate([ids, np.full((len(ids), 2), -1)], axis=1)

    rec = recommend(tables, Request(k=3, user_vector=np.ones(3, np.float32)), dot_head, Padded())
    assert len(rec.items) == 3 and (rec.items >= 0).all()


def test_the_head_is_built_from_its_config_through_one_parameter_list():
    from models.config import HeadConfig
    from models.head import ScoreHead

    cfg = HeadConfig(hidden=16, epochs=2, weight_decay=0.5, seed=7)
    head = ScoreHead.from_config(cfg)
    assert set(ScoreHead.PARAMS) <= set(HeadConfig.model_fields)
    assert {k: getattr(head, k) for k in ScoreHead.PARAMS} == {
        k: getattr(cfg, k) for k in ScoreHead.PARAMS
    }


def test_reserve_cold_places_one_cold_item_in_every_n_and_keeps_prefixes():
    order = np.arange(10)  # candidate positions, best first
    cold = np.zeros(10, bool)
    cold[[6, 8]] = True
    np.testing.assert_array_equal(reserve_cold(order, cold, 5, 0), [0, 1, 2, 3, 4])
    # every 3 places owe one cold item: place 3 gets item 6, place 6 item 8
    np.testing.assert_array_equal(reserve_cold(order, cold, 7, 3), [0, 1, 6, 2, 3, 8, 4])
    for k in range(1, 11):  # the top k is the top 10's first k
        np.testing.assert_array_equal(
            reserve_cold(order, cold, k, 3), reserve_cold(order, cold, 10, 3)[:k]
        )
    # a cold item the head already ranks high keeps its place and counts
    cold = np.zeros(10, bool)
    cold[[0, 9]] = True
    np.testing.assert_array_equal(reserve_cold(order, cold, 4, 3), [0, 1, 2, 3])
    np.testing.assert_array_equal(reserve_cold(order, cold, 6, 3), [0, 1, 2, 3, 4, 9])
    # no cold item in the pool: the head's order
    np.testing.assert_array_equal(reserve_cold(order, np.zeros(10, bool), 4, 2), [0, 1, 2, 3])


def test_recommend_keeps_cold_places_in_the_served_order():
    tables = _tables()
    tables.item_cold[:] = False
    tables.item_cold[np.arange(0, 40, 4)] = True
    req = Request(k=12, user_vector=np.array([1.0, 0.5, -0.2], np.float32))
    plain = recommend(tables, req, dot_head, n_wals=30, n_text=30)
    placed = recommend(tables, req, dot_head, n_wals=30, n_text=30, cold_every=3)
    for n in (3, 6, 9, 12):
        assert tables.item_cold[placed.items[:n]].sum() >= n // 3
    assert tables.item_cold[placed.items].sum() > tables.item_cold[plain.items].sum()
