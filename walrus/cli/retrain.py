"""`walrus retrain`: the events since the last retrain, a candidate trained on them, published
only if the held-out slice says it is not worse (``walrus.retraining``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from walrus.cli.common import ConfigOption, SetOption, console, user_errors, with_progress


@user_errors
def retrain_cmd(
    config: ConfigOption,
    set_: SetOption = None,
    events: Annotated[
        str | None,
        typer.Option(
            help="A redis:// URL, or a CSV/Parquet file of user_id, item_id, weight, "
            "timestamp (else WALRUS_EVENTS__REDIS_URL)."
        ),
    ] = None,
    serving: Annotated[
        Path | None,
        typer.Option(help="The bundles folder the service serves from (default: the config's)."),
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(help="Only events after this Unix time (default: the last retrain's)."),
    ] = None,
    cold: Annotated[
        bool, typer.Option("--cold", help="No warm start: WALS from random factors.")
    ] = False,
    served_events: Annotated[
        str | None,
        typer.Option(
            help="What the serving bundle folds in today, when --events is not it: the "
            "gate judges serving as it serves (default: WALRUS_EVENTS__REDIS_URL when "
            "--events is a file, else the events trained on)."
        ),
    ] = None,
    publish_to: Annotated[
        str | None,
        typer.Option(
            help="Where a candidate that passes goes: a bundles folder, or an s3:// prefix "
            "(with retrain.promote; default: beside the serving bundle)."
        ),
    ] = None,
) -> None:
    """Merge the events since the last retrain into the config's interactions, hold out the
    newest slice by time, train a candidate (WALS warm-started from the serving bundle), and
    publish it beside `current` only if it is not worse than the serving bundle on that slice
    by more than retrain.tolerance: then an experiment at retrain.share, or `current` moved
    with retrain.promote. Exit 0 either way; the report under OUTPUT_DIR/retrain says why."""
    from models.config import load_config
    from walrus.retraining import retrain, sources

    cfg = load_config(config, set_)
    source, folded = sources(events, served_events, os.environ.get("WALRUS_EVENTS__REDIS_URL"))
    report = with_progress(
        "retrain",
        lambda say: retrain(
            cfg, source, str(serving or cfg.bundles_dir), since, cold, say, publish_to, folded
        ),
    )
    decision = report.decision
    verdict = decision.reason if decision is not None else "no decision"
    console.print(
        f"walrus retrain: candidate {report.candidate_bundle}: {verdict}; action: {report.action}",
        highlight=False,
    )
