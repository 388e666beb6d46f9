"""Training helpers: queries for examples, the example split, the head's examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.config import load_config
from models.training import derived_query, example_split, queries_by_item


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


def test_head_examples_follow_the_configured_request_mix(tiny_pipeline_config, tiny_trained):
    """Examples without a user and without a query come in the configured shares; the
    positive comes first, negatives differ from it, and a user-less example carries no
    user signal at all."""
    from models.core.features import N_SCALARS
    from models.pipeline import load_dataset
    from models.training import make_head_examples

    cfg = load_config(
        tiny_pipeline_config,
        ["head.no_user_share=0.5", "head.no_query_share=0.25", "head.max_examples=400",
         "head.random_negatives=2", "head.hard_negatives=3"],
    )  # fmt: skip
    dataset = load_dataset(cfg.data)
    history, positives = example_split(tiny_trained.hybrid.seen, cfg)
    hybrid = tiny_trained.hybrid
    groups = make_head_examples(
        cfg, hybrid.wals, hybrid.tables, history, positives, tiny_trained.texts, {},
        tiny_trained.encoder.encode,
    )  # fmt: skip
    assert dataset.matrix.shape == hybrid.seen.shape
    assert groups.shape[1] == 1 + 5 and len(groups) == min(400, positives.nnz)
    scalars = groups.shape[2] - N_SCALARS
    user_flag, query_flag = groups[:, 0, scalars + 4], groups[:, 0, scalars + 5]
    assert abs(float((user_flag == 0).mean()) - 0.5) < 0.1
    assert abs(float((query_flag == 0).mean()) - 0.25) < 0.1
    no_user = user_flag == 0
    wals_dim = hybrid.tables.item_factors.shape[1]
    assert np.all(groups[no_user][:, :, :wals_dim] == 0)  # no u*v without a user
    assert np.all(groups[no_user][:, :, scalars + 2] == 0)  # and no user text profile
    # with a user, no negative is the positive item (their u*v features differ)
    with_user = groups[~no_user][:50]
    assert all(not np.array_equal(g[0], g[j]) for g in with_user for j in range(1, 6))
