"""``walrus``: the command-line program.

Each command imports its modules when it runs, on purpose: `walrus serve` must not load torch
and `walrus data` must not load onnxruntime. Every other module imports at its top.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from models.core.errors import WalrusError

app = typer.Typer(help="walrus: hybrid WALS + text recommender.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare and check input data.", no_args_is_help=True)
train_app = typer.Typer(help="Train models.", no_args_is_help=True)
bundle_app = typer.Typer(help="Bundles made without the training pipeline.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bundle_app, name="bundle")
app.add_typer(train_app, name="train")

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Pipeline TOML config.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: section.field=value.")
]


def user_errors(func: F) -> F:
    """Turn walrus' own errors (``WalrusError``: bad input, a bad artifact, a failed check)
    into one line on stderr and exit status 2. Anything else is a bug: its traceback shows."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WalrusError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,  # a failed command must leave exactly one line: the error
    )


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------- data
@data_app.command("synthetic")
@user_errors
def data_synthetic(
    out: Annotated[Path, typer.Option(help="Directory to write interactions.csv and catalog.csv.")],
    size: Annotated[str, typer.Option(help="tiny, small, medium (5M) or large (10M).")] = "small",
    seed: int = 0,
) -> None:
    """Generate a seeded synthetic data set with latent topics."""
    from models.artifacts import atomic_directory
    from models.data.synthetic import SIZES, generate

    if size not in SIZES:
        raise WalrusError(f"--size {size!r} is unknown: use one of {', '.join(SIZES)}")
    with progress() as bar:
        task = bar.add_task(f"synthetic {size}", total=2)
        interactions, catalog = generate(SIZES[size], seed)
        bar.advance(task)
        with atomic_directory(out) as tmp:
            interactions.to_csv(tmp / "interactions.csv", index=False)
            catalog.to_csv(tmp / "catalog.csv", index=False)
        bar.advance(task)
    console.print(f"wrote {len(interactions)} interactions, {len(catalog)} items to {out}")


@data_app.command("movielens")
@user_errors
def data_movielens(
    movielens_dir: Annotated[Path, typer.Option("--dir", help="ml-latest-small directory.")],
    out: Annotated[Path, typer.Option(help="Directory to write walrus-format files.")],
) -> None:
    """Convert MovieLens ml-latest-small to interactions.csv, catalog.csv and queries.csv."""
    from models.artifacts import atomic_directory
    from models.data.movielens import load_movielens

    with progress() as bar:
        task = bar.add_task("reading MovieLens", total=2)
        interactions, catalog, queries = load_movielens(movielens_dir)
        bar.update(task, advance=1, description="writing")
        with atomic_directory(out) as tmp:
            interactions.to_csv(tmp / "interactions.csv", index=False)
            catalog.to_csv(tmp / "catalog.csv", index=False)
            queries.to_csv(tmp / "queries.csv", index=False)
        bar.advance(task)
    console.print(
        f"wrote {len(interactions)} ratings, {len(catalog)} movies, "
        f"{len(queries)} tag queries to {out}"
    )


@data_app.command("check")
@user_errors
def data_check(config: ConfigOption, set_: SetOption = None) -> None:
    """Load and validate the configured data; print its size."""
    from models.config import load_config
    from models.pipeline import load_dataset

    cfg = load_config(config, set_)
    with progress() as bar:
        bar.add_task("reading and validating", total=None)
        dataset = load_dataset(cfg.data)
    counts = dataset.item_popularity
    print(
        json.dumps(
            {
                "users": len(dataset.users),
                "items": len(dataset.items),
                "interactions": int(dataset.matrix.nnz),
                "items_without_interactions": int((counts == 0).sum()),
                "has_weights": dataset.weights is not None,
            }
        )
    )


# ---------------------------------------------------------------- train
@train_app.command("wals")
@user_errors
def train_wals(
    config: ConfigOption,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="Default: OUTPUT_DIR/wals.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="local or spark (default: the config's wals.engine)."),
    ] = None,
    master: Annotated[
        str | None, typer.Option(help="Spark master URL (default: the config's spark.master).")
    ] = None,
) -> None:
    """Fit WALS on all interactions and save factors, Gramian and id maps; with the Spark
    engine, also the factors as sharded Parquet (user_factors.parquet, item_factors.parquet)."""
    from models.artifacts import atomic_directory
    from models.config import load_config
    from models.pipeline import (
        ParquetOutput,
        fit_wals,
        fit_wals_spark,
        load_dataset,
        observed,
        save_wals,
    )

    overrides = list(set_ or [])
    if engine is not None:
        overrides.append(f"wals.engine={engine}")
    if master is not None:
        overrides.append(f"spark.master={master}")
    cfg = load_config(config, overrides)
    dataset = load_dataset(cfg.data)
    out = out or cfg.output_dir / "wals"
    has_weights = dataset.weights is not None
    with atomic_directory(out) as tmp:
        with progress() as bar:
            task = bar.add_task("WALS", total=cfg.wals.iterations)

            def report(it: int, loss: float, recall: float | None) -> None:
                shown = f"loss {loss:.5g}" if math.isfinite(loss) else f"iteration {it + 1}"
                bar.update(task, advance=1, description=f"WALS {shown}")

            if cfg.wals.engine == "spark":
                parquet = ParquetOutput(tmp, dataset.users, dataset.items)
                model = fit_wals_spark(cfg, observed(dataset), has_weights, report, parquet)
            else:
                model = fit_wals(cfg, observed(dataset), has_weights, callback=report)
        save_wals(tmp, model, dataset)
    console.print(
        f"WALS dim={model.dim} ({cfg.wals.engine}): {len(dataset.users)} users x "
        f"{len(dataset.items)} items, "
        f"final loss {model.history.loss[-1] if model.history.loss else float('nan'):.6g}, "
        f"{sum(model.history.seconds):.1f}s -> {out}"
    )


@train_app.command("hybrid")
@user_errors
def train_hybrid_cmd(
    config: ConfigOption,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="Default: OUTPUT_DIR/hybrid.")] = None,
) -> None:
    """Train everything the bundle needs: encoder, WALS, cold-start map and score head."""
    from models.artifacts import atomic_directory
    from models.config import load_config
    from models.pipeline import load_dataset, load_query_log
    from models.training import train_all

    cfg = load_config(config, set_)
    dataset = load_dataset(cfg.data)
    query_log = load_query_log(cfg.data.queries)
    out = out or cfg.output_dir / "hybrid"
    with atomic_directory(out) as tmp, progress() as bar:
        task = bar.add_task("training", total=None)
        trained = train_all(
            cfg, dataset, query_log, tmp / "tiny-encoder", lambda m: bar.update(task, description=m)
        )
        trained.save(tmp)
        bar.update(task, description="saved", completed=1, total=1)
    head = trained.hybrid.head.history["validation_loss"]
    console.print(
        f"hybrid: {len(dataset.users)} users x {len(dataset.items)} items, "
        f"{int(trained.hybrid.cold_items.sum())} cold items, head validation loss "
        f"{min(head):.4f} after {len(head)} epochs -> {out}"
    )


@bundle_app.command("synthetic")
@user_errors
def bundle_synthetic(
    out: Annotated[Path, typer.Option(help="Bundles directory; the new bundle becomes current.")],
    users: Annotated[int, typer.Option(min=1, help="Users (the seed: 10,000,000).")] = 10_000_000,
    items: Annotated[int, typer.Option(min=2, help="Items (the seed: 500,000).")] = 500_000,
    dim: Annotated[int, typer.Option(min=1, max=4096, help="WALS dimension.")] = 64,
    seen_per_user: Annotated[int, typer.Option(min=1, help="Mean seen items per user.")] = 10,
    titles: Annotated[int, typer.Option(min=1, help="Distinct item titles.")] = 50_000,
    head_examples: Annotated[int, typer.Option(min=10)] = 4_000,
    encoder: Annotated[str, typer.Option(help="Encoder package or path.")] = "",
    seed: int = 0,
) -> None:
    """A seed-scale bundle (clustered WALS factors, real titles and encoder, a trained head)
    for load tests: `walrus bundle synthetic --out artifacts/seed/bundles`."""
    from models.config import EncoderConfig
    from models.synthetic_bundle import SeedSpec, build_synthetic_bundle

    if head_examples > users:
        raise WalrusError(f"--head-examples {head_examples} > --users {users}: lower it")
    spec = SeedSpec(users, items, dim, seen_per_user, min(titles, items), head_examples, seed)
    with progress() as bar:
        task = bar.add_task("seed bundle", total=None)
        path = build_synthetic_bundle(
            spec, out, encoder or EncoderConfig().name, lambda m: bar.update(task, description=m)
        )
        bar.update(task, description="done", completed=1, total=1)
    manifest = json.loads((path / "manifest.json").read_text())
    indexes = ", ".join(
        f"{name} {e['factory']} {e['search_params']} recall@100 {e['recall_at_100']:.3f} "
        f"{e['speedup_over_flat']:.1f}x flat"
        for name, e in manifest["indexes"].items()
    )
    console.print(f"bundle {manifest['bundle_id']} -> {path} (current); {indexes}")


@app.command("export")
@user_errors
def export_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Pipeline TOML config.")
    ] = None,
    set_: SetOption = None,
    verify: Annotated[
        Path | None, typer.Option(help="Re-check a bundle's checksums and parity instead.")
    ] = None,
) -> None:
    """Build a bundle (FAISS, ONNX, manifest) from `walrus train hybrid`, or --verify one."""
    if verify is not None:
        from export.runtime import verify_bundle

        report = verify_bundle(verify)
        print(json.dumps(report, indent=2))
        console.print(f"bundle {report['bundle_id']}: {report['files']} files and parity OK")
        return
    if config is None:
        raise WalrusError("give --config to build a bundle, or --verify BUNDLE to check one")
    from export.bundle import build_bundle
    from models.config import load_config
    from models.training import TrainedArtifacts

    cfg = load_config(config, set_)
    trained = TrainedArtifacts.load(cfg.output_dir / "hybrid")
    with progress() as bar:
        task = bar.add_task("export", total=None)
        path = build_bundle(
            cfg, trained, cfg.bundles_dir, lambda m: bar.update(task, description=m)
        )
        bar.update(task, description="done", completed=1, total=1)
    manifest = json.loads((path / "manifest.json").read_text())
    console.print(
        f"bundle {manifest['bundle_id']} -> {path} (current); "
        f"recall@100 wals {manifest['indexes']['wals']['recall_at_100']:.3f} "
        f"text {manifest['indexes']['text']['recall_at_100']:.3f}; "
        f"encoder fp32 diff {manifest['parity']['encoder_fp32_max_abs_diff']:.1e}, "
        f"int8 cosine {manifest['parity']['encoder_int8_min_cosine']}"
    )


@app.command("serve")
def serve(
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle or bundles directory (else WALRUS_BUNDLE).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Else WALRUS_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Else WALRUS_PORT (8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (else WALRUS_WORKERS; 0: auto).")
    ] = None,
) -> None:
    """Start the HTTP service (uvicorn) with the WALRUS_* settings."""
    import os
    import tempfile

    from pydantic import ValidationError

    for name, value in (("BUNDLE", bundle), ("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"WALRUS_{name}"] = str(value)  # every worker builds its own Settings
    try:
        from service.settings import Settings, process_plan

        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "WALRUS_" + ".".join(str(p) for p in err["loc"]).upper()
        console.print(f"[red]error:[/red] {field}: {err['msg']}", highlight=False)
        raise typer.Exit(2) from None
    import uvicorn

    from export.runtime import usable_cpus

    plan = process_plan(settings, usable_cpus())
    # Every worker process sizes itself from the same resolved plan.
    os.environ["WALRUS_WORKERS"], os.environ["WALRUS_THREADS"] = (
        str(plan.workers),
        str(plan.threads),
    )
    if plan.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before the workers import prometheus_client: /metrics then sums all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="walrus-metrics-")
    logging.getLogger("walrus").setLevel(settings.log_level.upper())
    console.print(
        f"walrus serve: {plan.workers} worker(s) x {plan.threads} thread(s) "
        f"for the {plan.cpus} CPU(s) this process may use",
        highlight=False,
    )
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=plan.workers,
        log_level=settings.log_level,
        access_log=False,  # the service logs each request itself, as JSON with its id
        timeout_graceful_shutdown=int(settings.graceful_timeout_s) or None,
    )


# ---------------------------------------------------------------- eval
@app.command("eval")
@user_errors
def eval_(
    config: ConfigOption,
    set_: SetOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated subset of models (default: all).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write a report here: report.md, Recall/NDCG curves, importances."),
    ] = None,
) -> None:
    """Recall@K and NDCG@K of every model on every configured split."""
    from models.config import load_config
    from models.data import read_catalog
    from models.evaluation import MODELS, Shared, evaluate, evaluate_query_task
    from models.pipeline import load_dataset, load_query_log, make_split

    cfg = load_config(config, set_)
    chosen = MODELS
    if models:
        names = [m.strip() for m in models.split(",")]
        unknown = [m for m in names if m not in MODELS]
        if unknown:
            raise WalrusError(f"--models: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
        chosen = {m: MODELS[m] for m in names}
    dataset = load_dataset(cfg.data)
    query_log = load_query_log(cfg.data.queries)
    names = [s for s in cfg.eval.splits if s != "queries"]
    splits = [make_split(dataset, name, cfg.split) for name in names]
    with_queries = "queries" in cfg.eval.splits and query_log is not None
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(splits) * len(chosen) + int(with_queries))
        shared = Shared(cfg, dataset, query_log, lambda m: bar.update(task, description=m))
        results = evaluate(
            shared,
            splits,
            chosen,
            on_done=lambda s, m: bar.update(task, advance=1, description=f"{s}/{m}"),
        )
        if with_queries:
            assert cfg.data.catalog is not None and query_log is not None
            results += evaluate_query_task(
                cfg, dataset, read_catalog(cfg.data.catalog), query_log, shared.progress
            )
            bar.advance(task)
    if "queries" in cfg.eval.splits and query_log is None:
        console.print("queries: skipped (no data.queries query log in the config)")
    print_results(results, cfg.eval.ks)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": cfg.model_dump(mode="json"), "results": results}
        json_out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_out}")
    if report is not None:
        from models.report import write_eval_report

        about = (
            f"`walrus eval -c {config}`"
            + "".join(f" --set {s}" for s in set_ or [])
            + f": data {cfg.data.interactions}, WALS dim {cfg.wals.dim}, "
            f"λ {cfg.wals.regularization:g}, w0 {cfg.wals.unobserved_weight:g}, "
            f"encoder {cfg.encoder.name}, head loss {cfg.head.loss}."
        )
        console.print(f"wrote {write_eval_report(results, cfg.eval.ks, report, about)}")


# ---------------------------------------------------------------- tune
@app.command("tune")
@user_errors
def tune_cmd(
    config: ConfigOption,
    set_: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where the tuned config goes (default: CONFIG with .tuned.toml)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Report folder (default: OUTPUT_DIR/tune).")
    ] = None,
) -> None:
    """Search WALS's and the head's settings on a validation split of the training data and
    write a config with the best values."""
    from models.config import load_config, write_config
    from models.evaluation import Shared
    from models.pipeline import load_dataset, load_query_log
    from models.report import write_tune_report
    from models.tuning import tune

    cfg = load_config(config, set_)
    out = out or config.with_suffix(".tuned.toml")
    report = report or cfg.output_dir / "tune"
    dataset = load_dataset(cfg.data)
    query_log = load_query_log(cfg.data.queries)
    total = cfg.tune.wals_trials + cfg.tune.head_trials
    with progress() as bar:
        task = bar.add_task("tuning", total=total)
        shared = Shared(cfg, dataset, query_log, lambda m: bar.update(task, description=m))

        def on_trial(study: str, number: int, value: float) -> None:
            bar.update(task, advance=1, description=f"{study} trial {number}: {value:.4f}")

        best, studies = tune(shared, on_trial)
    metric = cfg.tune.metric
    lines = [
        f"{s.name}: best {metric} {s.best_value:.4f} after {len(s.trials)} trials "
        f"(first trial, the config's own values: {s.trials[0]['value']:.4f})"
        for s in studies
    ]
    header = (
        f"walrus tune -c {config}: {metric} on a per-user {cfg.tune.validation_fraction:g} "
        "validation split of the holdout split's training part. " + "; ".join(lines)
    )
    write_config(best, out, header)
    for study in studies:
        path = write_tune_report(
            study.trials, metric, report / study.name, f"{header}\n\nStudy: {study.name}."
        )
        console.print(f"wrote {path}")
    for line in lines:
        console.print(line)
    console.print(f"wrote {out}")


def print_results(results: list[dict[str, Any]], ks: list[int]) -> None:
    table = Table(title="walrus eval")
    table.add_column("split")
    table.add_column("model")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
        table.add_column(f"N@{k}", justify="right")
    table.add_column("users", justify="right")
    for row in results:
        cells = [f"{row[f'{m}@{k}']:.4f}" for k in ks for m in ("recall", "ndcg")]
        table.add_row(str(row["split"]), str(row["model"]), *cells, str(int(row["users"])))
    Console(width=max(100, 24 + 18 * len(ks))).print(table)


if __name__ == "__main__":
    app()
