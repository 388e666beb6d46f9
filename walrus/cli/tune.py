"""`walrus tune`: search WALS's and the head's settings on a validation split of the data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from walrus.cli.common import ConfigOption, SetOption, console, progress, user_errors


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
    """Search WALS's and the head's settings on a validation split carved from the data the
    config names (what `walrus train` fits on) and write a config with the best values."""
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

        best, studies = tune(shared, on_trial=on_trial)
    metric = cfg.tune.metric
    lines = [
        f"{s.name}: best {metric} {s.best_value:.4f} after {len(s.trials)} trials "
        f"(first trial, the config's own values: {s.trials[0]['value']:.4f})"
        for s in studies
    ]
    header = (
        f"walrus tune -c {config}: {metric} on a per-user {cfg.tune.validation_fraction:g} "
        f"validation split of {cfg.data.interactions} (all of it: the data `walrus train` "
        "fits on; [tuned_on] records which). " + "; ".join(lines)
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
