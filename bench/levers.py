"""What each lever of the hybrid adds, one at a time, on `walrus tune`'s validation split.

The config's tuned values (configs/movielens.toml) are the base. Every variant changes one
setting (or, last, two together); each is scored as `walrus tune` scores a trial: Recall@20
and NDCG@20 on the per-user validation split carved from the training data, WALS alone
and the hybrid as served. The text half (the encoder, the item embeddings) is built once
and shared. No test pair is involved: this chooses what to keep, it does not report quality.

    python -m bench.levers --config configs/movielens.toml
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import Benchmark
from bench.validation import config_argument, validation_data
from models.config import PipelineConfig
from models.evaluation import EvalContext, ModelFactory, Shared, hybrid_model, wals_model
from models.metrics import evaluate_scores
from models.pipeline import load_query_log


def fine_tuned(pairs: int) -> dict[str, Any]:
    """The encoder section of a fine-tune on ``pairs`` (item, co-consumed item) text pairs."""
    return {"fine_tune": True, "fine_tune_pairs": ["co_consumed"], "fine_tune_max_pairs": pairs}


USER_HEAVY = {"user_share": 0.7, "history_share": 0.1, "user_query_share": 0.1, "query_share": 0.1}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "hybrid as configured": {},
    "4 example rounds (more pools per user)": {"head": {"example_rounds": 4}},
    "larger WALS pool (200, text 100)": {"candidates": {"n_wals": 200}},
    "user-heavy request mix (0.7 user)": {"head": USER_HEAVY},
    "4 example rounds and the user-heavy mix": {"head": {"example_rounds": 4, **USER_HEAVY}},
    # Co-consumed pairs come from the validation split's training part only (EvalContext.text).
    "encoder fine-tuned on 20,000 co-consumed pairs": {"encoder": fine_tuned(20_000)},
    "encoder fine-tuned on 60,000 co-consumed pairs": {"encoder": fine_tuned(60_000)},
}


def variant(cfg: PipelineConfig, changes: dict[str, dict[str, Any]]) -> PipelineConfig:
    """``cfg`` with each section's ``changes`` applied at once (validated together)."""
    tree = cfg.model_dump()
    for section, values in changes.items():
        tree[section] = {**tree[section], **values}
    return PipelineConfig.model_validate(tree)


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = args.config
    cfg, dataset, split = validation_data(config)
    shared = Shared(cfg, dataset, load_query_log(cfg.data.queries))

    def score(c: PipelineConfig, factory: ModelFactory) -> dict[str, float]:
        start = time.perf_counter()
        fn = factory(EvalContext(shared.with_config(c), split))
        metrics = evaluate_scores(fn, split.train, split.test, (20,))
        return {
            "recall@20": float(metrics["recall@20"]),
            "ndcg@20": float(metrics["ndcg@20"]),
            "seconds": time.perf_counter() - start,
        }

    rows = {"WALS alone": score(cfg, wals_model)}
    for name, changes in VARIANTS.items():
        rows[name] = score(variant(cfg, changes), hybrid_model) | {"changes": changes}
        print(name, rows[name], flush=True)
    return {"config": str(config), "rows": rows}


def report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    wals = rows["WALS alone"]["recall@20"]
    lines = [
        "| model | Recall@20 | NDCG@20 | Recall@20 ÷ WALS |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {r['recall@20'] / wals:.3f} |"
            for name, r in rows.items()
        ),
    ]
    return "\n".join(lines)


BENCHMARK = Benchmark("levers", __doc__ or "", config_argument, run, report)
main = BENCHMARK.main


if __name__ == "__main__":
    raise SystemExit(main())
