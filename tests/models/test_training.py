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
