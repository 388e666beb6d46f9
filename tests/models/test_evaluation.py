"""The query task's split and its no-leak rule."""

from __future__ import annotations

import pandas as pd

from models.evaluation import catalog_without_queries, hold_out_queries


def test_hold_out_queries_is_a_seeded_partition():
    log = pd.DataFrame({"user_id": range(50), "query": [f"q{i}" for i in range(50)],
                        "item_id": [f"i{i % 7}" for i in range(50)]})  # fmt: skip
    train, test = hold_out_queries(log, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert set(train.index).isdisjoint(test.index)
    _, again_test = hold_out_queries(log, 0.2, seed=3)
    assert again_test.index.tolist() == test.index.tolist()
    assert hold_out_queries(log, 0.2, seed=4)[1].index.tolist() != test.index.tolist()


def test_held_out_tags_are_removed_from_item_text_unless_trained_on():
    catalog = pd.DataFrame(
        {"item_id": ["m1", "m2", "m3"], "title": ["A", "B", "C"],
         "tags": ["space, Robots, funny", "robots", "space"]}
    )  # fmt: skip
    train_log = pd.DataFrame({"user_id": [1], "item_id": ["m2"], "query": ["robots"]})
    test_log = pd.DataFrame(
        {"user_id": [2, 3, 4], "item_id": ["m1", "m2", "m3"], "query": ["robots", "Robots", "x"]}
    )
    out = catalog_without_queries(catalog, train_log, test_log)
    tags = dict(zip(out["item_id"], out["tags"], strict=True))
    assert tags["m1"] == "space, funny"  # the held-out query "robots" is gone, any case
    assert tags["m2"] == "robots"  # a training query put the same tag there: kept
    assert tags["m3"] == "space"
    assert catalog["tags"].tolist()[0] == "space, Robots, funny"  # the input is untouched


def test_a_catalog_without_tags_is_unchanged():
    catalog = pd.DataFrame({"item_id": ["m1"], "title": ["A"]})
    empty = pd.DataFrame({"user_id": [], "item_id": [], "query": []})
    assert catalog_without_queries(catalog, empty, empty) is catalog
