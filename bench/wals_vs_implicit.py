"""WALS vs benfred/implicit's AlternatingLeastSquares, side by side in one run.

Both minimise the same objective. WALS: sum_obs W (1 - u.v)^2 + w0 sum_unobs (u.v)^2 +
lambda(|U|^2 + |V|^2). Dividing by w0 gives implicit's form with confidence
C = W / w0 on observed entries, 1 elsewhere, and regularization lambda / w0. With uniform
weights W = w0 + 1, so implicit gets a matrix of ones and ``alpha = 1 + 1 / w0``.

Reports the total fit time at 3 and 10 iterations, split into setup and seconds per
iteration, the ratios of the totals, and Recall@20 and NDCG@20 on the same per-user holdout; on MovieLens both are tuned on one shared grid using a
validation holdout carved out of the training part.

    python -m bench.wals_vs_implicit [--movielens DIR] [--synthetic medium|small|none]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from bench.common import print_table, write_results
from models.data import build_dataset, read_catalog, read_interactions
from models.data.movielens import load_movielens
from models.data.splits import holdout_split
from models.data.synthetic import SIZES, generate
from models.metrics import ranking_metrics
from models.wals import WALS

log = logging.getLogger("bench")


def implicit_params(regularization: float, unobserved_weight: float) -> dict[str, float]:
    """implicit's (alpha, regularization) giving the same minimiser as WALS with uniform weights."""
    return {
        "alpha": 1.0 + 1.0 / unobserved_weight,
        "regularization": regularization / unobserved_weight,
    }


def fit_wals(
    train: sp.csr_matrix, dim: int, reg: float, w0: float, iterations: int
) -> tuple[Any, float]:
    """The fitted model and the fit's wall time, setup included."""
    model = WALS(
        dim=dim, regularization=reg, unobserved_weight=w0, iterations=iterations, device="cpu"
    )
    start = time.perf_counter()
    model.fit(train)
    return model, time.perf_counter() - start


def fit_implicit(
    train: sp.csr_matrix, dim: int, reg: float, w0: float, iterations: int
) -> tuple[Any, float]:

    model = AlternatingLeastSquares(
        factors=dim,
        iterations=iterations,
        random_state=0,
        calculate_training_loss=False,
        **implicit_params(reg, w0),
    )
    ones = train.copy().astype(np.float32)
    ones.data[:] = 1.0
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model.fit(ones, show_progress=False)
        seconds = time.perf_counter() - start
    return model, seconds


FITTERS = {"walrus WALS (cg, torch)": fit_wals, "implicit ALS (cg, cython)": fit_implicit}
SHORT, LONG = 3, 10  # the iteration counts whose total fit times are compared


def score(model: Any, train: sp.csr_matrix, test: sp.csr_matrix) -> dict[str, float]:
    return ranking_metrics(
        np.asarray(model.user_factors), np.asarray(model.item_factors), train, test, (20,)
    )


def run_dataset(
    name: str, matrix: sp.csr_matrix, dim: int, reg: float, w0: float
) -> list[dict[str, Any]]:
    """Total fit time at SHORT and LONG iterations; their difference splits it into setup
    (everything before the first iteration, and after the last) and time per iteration, the
    same way for both libraries. Recall and NDCG are those of the LONG fit."""
    split = holdout_split(matrix, 0.2, seed=0)
    rows = []
    for model_name, fitter in FITTERS.items():
        fitter(split.train[:50], dim, reg, w0, 1)  # warm up threads, JIT and caches
        _, short = fitter(split.train, dim, reg, w0, SHORT)
        model, long = fitter(split.train, dim, reg, w0, LONG)
        per_iteration = (long - short) / (LONG - SHORT)
        metrics = score(model, split.train, split.test)
        rows.append(
            {
                "dataset": name,
                "model": model_name,
                "dim": dim,
                "regularization": reg,
                "unobserved_weight": w0,
                f"fit_s_{SHORT}": short,
                f"fit_s_{LONG}": long,
                "setup_s": max(0.0, short - SHORT * per_iteration),
                "s_per_iter": per_iteration,
                "recall@20": metrics["recall@20"],
                "ndcg@20": metrics["ndcg@20"],
            }
        )
    for n in (SHORT, LONG):
        rows[0][f"ratio_{n}"] = rows[0][f"fit_s_{n}"] / rows[1][f"fit_s_{n}"]
    return rows


GRID = {
    "dim": [32, 64, 128],
    "regularization": [0.001, 0.01, 0.1],
    "unobserved_weight": [0.01, 0.05, 0.2],
}


def tune(matrix: sp.csr_matrix, iterations: int) -> list[dict[str, Any]]:
    """Pick each model's best grid point on validation, then report it on the test holdout."""
    outer = holdout_split(matrix, 0.2, seed=0)
    inner = holdout_split(outer.train, 0.2, seed=1)
    rows = []
    for model_name, fitter in FITTERS.items():
        best: tuple[float, tuple[int, float, float]] | None = None
        for dim, reg, w0 in itertools.product(*GRID.values()):
            model, _ = fitter(inner.train, dim, reg, w0, iterations)
            val = score(model, inner.train, inner.test)["recall@20"]
            if best is None or val > best[0]:
                best = (val, (dim, reg, w0))
        assert best is not None
        dim, reg, w0 = best[1]
        model, sec = fitter(outer.train, dim, reg, w0, iterations)
        sec /= max(iterations, 1)
        metrics = score(model, outer.train, outer.test)
        rows.append(
            {
                "dataset": "movielens (tuned)",
                "model": model_name,
                "dim": dim,
                "regularization": reg,
                "unobserved_weight": w0,
                "s_per_iter": sec,
                "validation_recall@20": best[0],
                "recall@20": metrics["recall@20"],
                "ndcg@20": metrics["ndcg@20"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--movielens", type=Path, default=None, help="ml-latest-small directory")
    parser.add_argument("--synthetic", default="medium", help="synthetic size, or 'none'")
    parser.add_argument("--iterations", type=int, default=LONG, help="for the MovieLens grid")
    parser.add_argument("--no-tune", action="store_true", help="skip the MovieLens grid")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows: list[dict[str, Any]] = []
    if args.movielens is not None:
        interactions, catalog, _ = load_movielens(args.movielens)
        interactions = interactions[interactions["rating"] >= 4.0]
        matrix = build_dataset(interactions, catalog).matrix
        rows += run_dataset("movielens", matrix, 64, 0.001, 0.1)
        if not args.no_tune:
            rows += tune(matrix, args.iterations)
    if args.synthetic != "none":
        cache = Path("artifacts/bench-data") / f"synthetic-{args.synthetic}"
        if not (cache / "interactions.csv").is_file():
            cache.mkdir(parents=True, exist_ok=True)
            interactions, catalog = generate(SIZES[args.synthetic], seed=0)
            interactions.to_csv(cache / "interactions.csv", index=False)
            catalog.to_csv(cache / "catalog.csv", index=False)
        ds = build_dataset(
            read_interactions(cache / "interactions.csv"), read_catalog(cache / "catalog.csv")
        )
        name = f"synthetic-{args.synthetic} ({ds.matrix.shape[0]}x{ds.matrix.shape[1]}, {ds.matrix.nnz} nnz)"
        rows += run_dataset(name, ds.matrix, 64, 0.001, 0.1)

    columns = [
        "dataset",
        "model",
        "dim",
        "regularization",
        "unobserved_weight",
        f"fit_s_{SHORT}",
        f"fit_s_{LONG}",
        "setup_s",
        "s_per_iter",
        f"ratio_{SHORT}",
        f"ratio_{LONG}",
        "recall@20",
        "ndcg@20",
    ]
    print_table("WALS vs implicit ALS (same objective)", rows, columns)
    payload = {"iterations": args.iterations, "rows": rows}
    path = write_results("wals_vs_implicit", payload)
    print(report(payload))
    print(f"wrote {path}")


def report(result: dict[str, Any]) -> str:
    """The markdown table docs/benchmarks.md shows (a test compares them)."""

    def cell(row: dict[str, Any], key: str, fmt: str, bold: bool = False) -> str:
        if key not in row:
            return ""
        text = format(row[key], fmt)
        return f"**{text}**" if bold else text

    lines = [
        f"| data | model | dim, λ, w0 | fit, {SHORT} it. s | fit, {LONG} it. s | setup s "
        f"| s / it. | ratio at {SHORT} | ratio at {LONG} | Recall@20 | NDCG@20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['dataset']} | {row['model']} "
            f"| {row['dim']}, {row['regularization']:g}, {row['unobserved_weight']:g} "
            f"| {cell(row, f'fit_s_{SHORT}', '.3f')} | {cell(row, f'fit_s_{LONG}', '.3f')} "
            f"| {cell(row, 'setup_s', '.3f')} | {cell(row, 's_per_iter', '.4f')} "
            f"| {cell(row, f'ratio_{SHORT}', '.2f', True)} "
            f"| {cell(row, f'ratio_{LONG}', '.2f', True)} "
            f"| {row['recall@20']:.4f} | {row['ndcg@20']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
