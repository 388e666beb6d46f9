"""`walrus train`: WALS alone, or everything a bundle needs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from walrus.cli.common import ConfigOption, SetOption, console, progress, user_errors

app = typer.Typer(help="Train models.", no_args_is_help=True)


@app.command("wals")
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

            parquet = ParquetOutput(tmp, dataset.users, dataset.items)
            model = fit_wals(cfg, observed(dataset), has_weights, callback=report, parquet=parquet)
        save_wals(tmp, model, dataset)
    console.print(
        f"WALS dim={model.params.dim} ({cfg.wals.engine}): {len(dataset.users)} users x "
        f"{len(dataset.items)} items, "
        f"final loss {model.history.loss[-1] if model.history.loss else float('nan'):.6g}, "
        f"{sum(model.history.seconds):.1f}s -> {out}"
    )


@app.command("hybrid")
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
