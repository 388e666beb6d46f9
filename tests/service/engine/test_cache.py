"""The query-embedding cache: LRU, per bundle, whitespace-normalised, counted in /metrics."""

from __future__ import annotations

import numpy as np

from service.engine.cache import QueryCache
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings


def test_lru_per_bundle_with_normalised_keys():
    cache = QueryCache(2)
    a, b, c = (np.full(2, v, np.float32) for v in (1, 2, 3))
    cache.put("b1", "space  robots ", a)
    assert cache.get("b1", "space robots") is a  # whitespace does not matter
    assert cache.get("b2", "space robots") is None  # another bundle never answers
    cache.put("b1", "jazz", b)
    cache.get("b1", "space robots")  # now the most recent
    cache.put("b1", "drama", c)  # evicts "jazz", the least recent
    assert cache.get("b1", "jazz") is None and cache.get("b1", "drama") is c
    assert len(cache) == 2 and (cache.hits, cache.misses) == (3, 2)


def test_size_zero_turns_it_off():
    cache = QueryCache(0)
    cache.put("b", "q", np.ones(2))
    assert cache.get("b", "q") is None and len(cache) == 0 and cache.misses == 0


def test_a_cached_query_skips_the_encoder_and_answers_the_same(tiny_bundle):
    cache = QueryCache(100)
    rec = Recommender(tiny_bundle, Settings(bundle=tiny_bundle), cache)
    req = Recommend(query="space robots", k=5)
    first = rec.recommend(req)
    calls = []
    for session in rec.bundle.encoders:  # every session the batcher's threads may take
        encode = session.encode
        session.encode = lambda texts, e=encode: (calls.append(texts), e(texts))[1]  # type: ignore[method-assign]
    second = rec.recommend(Recommend(query=" space   robots", k=5))
    assert calls == [] and cache.hits == 1
    assert [i.item_id for i in second.items] == [i.item_id for i in first.items]
    assert "encode" in second.timings_ms and second.timings_ms["encode"] == 0.0


def test_hits_and_misses_reach_metrics(served_defaults):
    import httpx

    srv, _ = served_defaults
    for _ in range(3):
        httpx.post(f"{srv.url}/v1/recommend", json={"query": "cache me please", "k": 2})
    text = httpx.get(f"{srv.url}/metrics").text
    values = {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith("walrus_query_cache_")
    }
    assert values["walrus_query_cache_hits_total"] >= 2
    assert values["walrus_query_cache_misses_total"] >= 1
