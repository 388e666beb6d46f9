"""Training helpers: queries for examples, the example split, the head's examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import load_config
from models.examples import example_split
from models.text import derived_query, queries_by_item


def test_queries_by_item_drops_unknown_items_and_blank_queries():
    log = pd.DataFrame(
        {"item_id": ["a", "b", "zz", "a"], "query": ["space", " ", "x", "robots "], "user_id": 1}
    )
    assert queries_by_item(log, {"a": 0, "b": 1}) == {0: ["space", "robots"]}
    assert queries_by_item(None, {"a": 0}) == {}


def test_derived_query_uses_the_log_else_words_of_the_text():
    rng = np.random.default_rng(0)
    assert derived_query(rng, 0, ["ignored"], {0: ["tag"]}) == "tag"
    text = "The quiet robots of Mars"
    for _ in range(20):
        words = derived_query(rng, 1, ["", text], {}).split()
        assert 1 <= len(words) <= 3 and set(words) <= {"The", "quiet", "robots", "Mars"}


def test_example_split_moves_cold_items_entirely_to_the_positives(tiny_pipeline_config):
    cfg = load_config(tiny_pipeline_config, ["head.cold_item_share=0.3"])
    rng = np.random.default_rng(0)
    train = sp.random(60, 40, density=0.3, random_state=rng, format="csr")
    train.data[:] = 1.0
    history, positives = example_split(train, cfg)
    assert abs(history + positives - train).max() == 0
    assert history.multiply(positives).nnz == 0
    cold_columns = np.flatnonzero(np.asarray(history.sum(0)).ravel() == 0)
    made_cold = [c for c in cold_columns if train[:, c].nnz > 0]
    assert made_cold, "no item was made cold at share 0.3"
    for c in made_cold:
        assert positives[:, c].nnz == train[:, c].nnz


def test_head_pools_follow_the_configured_request_mix(tiny_pipeline_config, tiny_trained):
    """Requests of each kind are planned in the configured shares; a pool
    without a user carries no user signal at all; every pool holds a positive, no padded
    candidate is one, and pools are the service's: each request's candidates are unique."""
    from models.core.features import COLUMN
    from models.examples import make_head_pools, request_counts

    cfg = load_config(
        tiny_pipeline_config,
        [
            "head.user_share=0.4",
            "head.history_share=0.1",
            "head.user_query_share=0.2",
            "head.query_share=0.3",
            "head.max_requests=100",
        ],
    )
    history, positives = example_split(tiny_trained.hybrid.seen, cfg)
    hybrid = tiny_trained.hybrid
    counts = request_counts(cfg, int((np.diff(positives.indptr) > 0).sum()), positives.nnz)
    assert counts == {"user": 40, "history": 10, "user_query": 20, "query": 30}
    pools = make_head_pools(
        cfg,
        hybrid.wals,
        hybrid.tables,
        history,
        positives,
        tiny_trained.texts,
        {},
        tiny_trained.encoder.encode,
    )
    assert 0 < len(pools) <= 100
    assert pools.labels.any(1).all() and not (pools.labels & ~pools.mask).any()
    first = pools.features[:, 0]
    user, query = first[:, COLUMN["user_known"]] == 1, first[:, COLUMN["query_present"]] == 1
    # every kind made it (pools whose positive no source found are dropped: fewer survive
    # for queries derived from the tiny encoder's texts than for users)
    assert (~user & query).any() and (user & query).any() and (user & ~query).any()
    no_user = pools.features[~user]
    for name in ("wals_score", "wals_score_z", "profile_score", "history_present"):
        assert np.all(no_user[..., COLUMN[name]] == 0), name


def test_request_counts_keep_the_mix_when_users_run_out(tiny_pipeline_config):
    from models.examples import request_counts

    cfg = load_config(tiny_pipeline_config, ["head.max_requests=1000"])
    mix = cfg.head.request_mix()
    counts = request_counts(cfg, n_users=20, n_positives=10_000)
    assert counts["user"] <= 20 and counts["history"] <= 20
    total = sum(counts.values())
    for kind, share in mix.items():
        assert abs(counts[kind] / total - share) < 0.02, kind


def test_example_rounds_add_pools_from_other_splits(tiny_pipeline_config, tiny_trained):
    """head.example_rounds = 2: the pools of two different history/positive splits, one
    after the other (the first round's are exactly those of one round)."""
    from models.examples import head_pools
    from models.head import RankingPools
    from models.text import TextResources

    text = TextResources(
        tiny_trained.encoder,
        tiny_trained.texts,
        tiny_trained.hybrid.tables.item_text_embeddings,
        {},
    )
    train = tiny_trained.hybrid.seen
    cfg = load_config(tiny_pipeline_config, ["head.max_requests=60"])
    one = head_pools(cfg, train, False, text, lambda _m: None)
    two = head_pools(
        cfg.model_copy(update={"head": cfg.head.model_copy(update={"example_rounds": 2})}),
        train,
        False,
        text,
        lambda _m: None,
    )
    assert len(one) < len(two) <= 2 * len(one) + 1
    first = two.take(np.arange(len(one)))
    width = one.features.shape[1]
    np.testing.assert_array_equal(first.features[:, :width], one.features)
    assert not first.mask[:, width:].any()
    # the second round's pools differ: another split, another WALS
    second = two.take(np.arange(len(one), len(two)))
    assert not np.array_equal(second.features[: len(one), :width].sum(), one.features.sum())
    both = RankingPools.concat([one, one])
    assert len(both) == 2 * len(one) and both.features.shape[1] == width
