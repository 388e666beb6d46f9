"""`walrus data`: prepare and check input data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from models.core.errors import WalrusError
from walrus.cli.common import ConfigOption, SetOption, console, progress, user_errors

app = typer.Typer(help="Prepare and check input data.", no_args_is_help=True)


@app.command("synthetic")
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


@app.command("movielens")
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


@app.command("events")
@user_errors
def data_events(
    redis_url: Annotated[str, typer.Option(help="The service's WALRUS_EVENTS__REDIS_URL.")],
    out: Annotated[Path, typer.Option(help="The interactions CSV to write.")],
    merge_with: Annotated[
        Path | None,
        typer.Option(help="An interactions CSV to write first (its columns are kept)."),
    ] = None,
) -> None:
    """Export the users' recent events from Redis as interactions (user_id, item_id, weight,
    timestamp), alone or after an existing interactions file, for the next training run.
    Written to a temporary file, then renamed: never half a file."""
    import pandas as pd
    import redis

    from service.engine.events import all_events

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        # An exposure (weight 0: an impression) is no interaction: never trained on.
        rows = [vars(e) for e in all_events(client) if e.weight > 0]
    except (redis.RedisError, ValueError) as exc:
        raise WalrusError(f"--redis-url {redis_url}: {exc}") from None
    columns = ["user_id", "item_id", "weight", "timestamp", "type", "recommendation_id"]
    events = pd.DataFrame(rows, columns=columns)
    frame = events
    if merge_with is not None:
        base = pd.read_csv(merge_with, dtype={"user_id": str, "item_id": str})
        # The base's columns decide: without a weight column, training weighs every
        # interaction as WALS does (w0 + r_i c_j), and the events' weights are left out.
        frame = pd.concat([base, events[[c for c in events.columns if c in base.columns]]])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    console.print(f"wrote {len(events)} events of {events['user_id'].nunique()} users to {out}")


@app.command("check")
@user_errors
def data_check(config: ConfigOption, set_: SetOption = None) -> None:
    """Load and validate the configured data; print its size, its attributes (values per
    field) and a suggested kind for every catalog column, for `data.attributes`."""
    from models.config import load_config
    from models.data import read_catalog
    from models.data.attributes import suggest_kinds
    from models.pipeline import load_dataset

    cfg = load_config(config, set_)
    with progress() as bar:
        bar.add_task("reading and validating", total=None)
        dataset = load_dataset(cfg.data)
        catalog = read_catalog(cfg.data.catalog) if cfg.data.catalog is not None else None
    counts = dataset.item_popularity
    print(
        json.dumps(
            {
                "users": len(dataset.users),
                "items": len(dataset.items),
                "interactions": int(dataset.matrix.nnz),
                "items_without_interactions": int((counts == 0).sum()),
                "has_weights": dataset.weights is not None,
                "attributes": {
                    c.name: {"kind": c.kind, "values": len(c.values)} if c.values else c.kind
                    for c in dataset.catalog.attributes
                },
                "suggested_kinds": {}
                if catalog is None
                else suggest_kinds(catalog, cfg.data.tag_separator),
            }
        )
    )
