"""The query task's split and its no-leak rule."""

from __future__ import annotations

import pandas as pd

from models.evaluation import catalog_without_queries, hold_out_queries


def test_hold_out_queries_is_a_seeded_partition():
    log = pd.DataFrame(
        {
            "user_id": range(50),
            "query": [f"q{i}" for i in range(50)],
            "item_id": [f"i{i % 7}" for i in range(50)],
        }
    )
    train, test = hold_out_queries(log, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert set(train.index).isdisjoint(test.index)
    _, again_test = hold_out_queries(log, 0.2, seed=3)
    assert again_test.index.tolist() == test.index.tolist()
    assert hold_out_queries(log, 0.2, seed=4)[1].index.tolist() != test.index.tolist()


def test_held_out_tags_are_removed_from_item_text_unless_trained_on():
    catalog = pd.DataFrame(
        {
            "item_id": ["m1", "m2", "m3"],
            "title": ["A", "B", "C"],
            "tags": ["space, Robots, funny", "robots", "space"],
        }
    )
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


def test_the_query_task_ranks_every_held_out_query_with_each_model(tiny_pipeline_config):
    """On the tiny set with a query log made from item titles: three models, each scored on
    exactly the held-out queries, and text (which sees the query) beats popularity-free
    chance."""
    import numpy as np

    from models.config import load_config
    from models.evaluation import evaluate_query_task
    from models.pipeline import load_dataset

    cfg = load_config(tiny_pipeline_config, ["eval.query_fraction=0.25"])
    dataset = load_dataset(cfg.data)
    catalog = pd.read_csv(cfg.data.catalog)
    rng = np.random.default_rng(0)
    coo = dataset.matrix.tocoo()
    pick = rng.choice(coo.nnz, size=80, replace=False)
    titles = dict(zip(catalog["item_id"].astype(str), catalog["title"].astype(str), strict=True))
    log = pd.DataFrame(
        {
            "user_id": [dataset.users.ids[u] for u in coo.row[pick]],
            "item_id": [dataset.items.ids[i] for i in coo.col[pick]],
        }
    )
    log["query"] = [titles[i] for i in log["item_id"]]
    rows = evaluate_query_task(cfg, dataset, catalog, log)
    assert [r["model"] for r in rows] == ["text", "wals", "hybrid"]
    assert {r["users"] for r in rows} == {20.0}  # 25% of 80 queries
    by_model = {r["model"]: r for r in rows}
    chance = max(cfg.eval.ks) / len(dataset.items)
    assert by_model["text"][f"recall@{max(cfg.eval.ks)}"] > chance


def test_the_docs_table_is_the_kept_report_and_its_claims_hold():
    """docs/evaluation.md shows the kept `walrus eval --report` run, and the claims made
    there are that run's: cold places more than double text-only on cold items, the hybrid
    is above WALS on held-out users and the best of three on the query task at R@20."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    report = (repo / "docs/results/eval/report.md").read_text()
    table = report[report.index("| split | model |") : report.index("![Recall@K]")].strip()
    assert table in (repo / "docs/evaluation.md").read_text()
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = float(cells[4])  # R@20
    assert rows[("cold_items", "hybrid_cold")] > 2 * rows[("cold_items", "text")]
    assert rows[("users", "hybrid")] > rows[("users", "wals")]
    assert rows[("queries", "hybrid")] > max(rows[("queries", "wals")], rows[("queries", "text")])
