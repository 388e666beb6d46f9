"""Score head, features, cold-start map and the request flow, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models.cold_start import RidgeMap, fill_cold_items
from models.core.features import build_features, feature_dim, text_profile
from models.core.hybrid import ItemTables, Request, exact_search, recommend
from models.head import ScoreHead


def test_feature_layout_and_flags():
    v = np.arange(6, dtype=np.float32).reshape(3, 2)
    t = np.eye(3, dtype=np.float32)
    pop = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    u, q = np.array([1.0, 2.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    f = build_features(u, q, None, v, t, pop)
    assert f.shape == (3, feature_dim(2, 3))
    np.testing.assert_allclose(f[:, :2], v * u)
    np.testing.assert_allclose(f[:, 2:5], t * q)
    np.testing.assert_allclose(f[:, 5], v @ u)
    np.testing.assert_allclose(f[:, 6], t @ q)
    np.testing.assert_allclose(f[:, 7], 0.0)  # no profile
    np.testing.assert_allclose(f[:, 8], pop)
    assert (f[:, 9] == 1).all() and (f[:, 10] == 1).all()
    g = build_features(None, None, q, v, t, pop)
    assert (g[:, :7] == 0).all() and (g[:, 9] == 0).all() and (g[:, 10] == 0).all()
    np.testing.assert_allclose(g[:, 7], t @ q)


def test_text_profile_is_unit_mean():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(text_profile(emb, np.array([0, 1])), [2**-0.5, 2**-0.5], atol=1e-6)
    assert not text_profile(emb, np.array([], dtype=np.int64)).any()


def test_head_learns_a_known_rule():
    """Positives have a larger feature 0: a trained head must rank them first."""
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(600, 6, 4)).astype(np.float32)
    groups[:, 0, 0] += 3.0
    head = ScoreHead(hidden=16, epochs=40, learning_rate=1e-2, seed=0).fit(groups)
    test = rng.normal(size=(200, 6, 4)).astype(np.float32)
    test[:, 0, 0] += 3.0
    scores = head.score(test.reshape(-1, 4)).reshape(200, 6)
    assert (scores.argmax(1) == 0).mean() > 0.8
    assert head.history["validation_loss"][-1] < head.history["validation_loss"][0]


def test_head_bpr_numpy_matches_torch_and_roundtrips(tmp_path):
    import torch

    rng = np.random.default_rng(1)
    groups = rng.normal(size=(50, 3, 5)).astype(np.float32)
    head = ScoreHead(hidden=8, loss="bpr", epochs=3, seed=1).fit(groups)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    with torch.no_grad():
        ref = head.torch_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(head.score(x), ref, atol=1e-5)
    head.save(tmp_path)
    np.testing.assert_array_equal(ScoreHead.load(tmp_path).score(x), head.score(x))
    with pytest.raises(ValueError, match="groups must be"):
        head.fit(np.zeros((5, 1, 5), np.float32))
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


def dot_head(features):
    # scores = u.v + q.t (wals_dim 3, text_dim 4): a head whose ranking we can predict
    return features[:, 7] + features[:, 8]


def test_recommend_exactly_k_with_exclusions_and_over_fetch():
    tables = _tables()
    wals, text = exact_search(tables.item_factors), exact_search(tables.item_text_embeddings)
    user = np.array([1.0, 0.5, -0.2], np.float32)
    exclude = exact_search(tables.item_factors)(user, 15)[0]  # the 15 best WALS items
    req = Request(k=10, user_vector=user, exclude=exclude)
    rec = recommend(tables, req, wals, text, dot_head, n_wals=5, n_text=5)
    assert len(rec.items) == 10 and not set(rec.items) & set(exclude)
    assert all(s == ["wals"] for s in rec.sources)
    # oracle: the best 10 by u.v among non-excluded items
    scores = tables.item_factors @ user
    scores[exclude] = -np.inf
    assert list(rec.items) == list(np.argsort(-scores)[:10])


def test_recommend_fills_with_popular_and_caps_at_catalog():
    tables = _tables(n=12)
    wals, text = exact_search(tables.item_factors), exact_search(tables.item_text_embeddings)
    rec = recommend(tables, Request(k=50, exclude=np.array([0, 1])), wals, text, dot_head)
    assert len(rec.items) == 10  # 12 items, 2 excluded
    assert all(s == ["popular"] for s in rec.sources)
    order = [i for i in tables.popular_order if i not in (0, 1)]
    assert list(rec.items) == order  # most popular first


def test_recommend_marks_both_sources():
    tables = _tables()
    wals, text = exact_search(tables.item_factors), exact_search(tables.item_text_embeddings)
    q = tables.item_text_embeddings[3]
    user = tables.item_factors[3]
    rec = recommend(tables, Request(k=5, user_vector=user, query_vector=q), wals, text,
                    dot_head, n_wals=5, n_text=5)  # fmt: skip
    assert rec.sources[list(rec.items).index(3)] == ["wals", "text"]
    # every other item's sources say which top-5 it came from
    top_wals, top_text = set(wals(user, 5)[0].tolist()), set(text(q, 5)[0].tolist())
    for item, sources in zip(rec.items.tolist(), rec.sources, strict=True):
        assert ("wals" in sources) == (item in top_wals)
        assert ("text" in sources) == (item in top_text)
    assert np.all(np.diff(rec.scores) <= 0)


def test_popular_items_top_up_a_request_with_a_user_vector():
    tables = _tables(n=12)
    wals, text = exact_search(tables.item_factors), exact_search(tables.item_text_embeddings)
    user = np.array([1.0, 0.0, 0.0], np.float32)
    exclude = np.arange(6)
    rec = recommend(tables, Request(k=6, user_vector=user, exclude=exclude), wals, text,
                    dot_head, n_wals=2, n_text=2)  # fmt: skip
    assert len(rec.items) == 6 and not set(rec.items.tolist()) & set(exclude.tolist())
    assert sorted(rec.items.tolist()) == list(range(6, 12))  # all that is left
    assert {"wals"} <= {s for src in rec.sources for s in src}


def test_excluding_every_item_returns_nothing():
    tables = _tables(n=8)
    wals, text = exact_search(tables.item_factors), exact_search(tables.item_text_embeddings)
    req = Request(k=5, user_vector=np.ones(3, np.float32), exclude=np.arange(8))
    rec = recommend(tables, req, wals, text, dot_head)
    assert len(rec.items) == 0 and rec.sources == []


def test_search_ignores_faiss_padding():
    tables = _tables(n=5)

    def padded(vector, k):
        ids, scores = exact_search(tables.item_factors)(vector, k)
        return np.concatenate([ids, [-1, -1]]), np.concatenate([scores, [0, 0]])

    rec = recommend(
        tables, Request(k=3, user_vector=np.ones(3, np.float32)), padded, padded, dot_head
    )
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
