"""`walrus eval`: Recall@K and NDCG@K of every model on every configured split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from models.core.errors import WalrusError

if TYPE_CHECKING:  # the command imports them when it runs
    import numpy as np

    from models.config import PipelineConfig
    from models.data import Dataset
    from models.evaluation import ModelFactory
from walrus.cli.common import ConfigOption, SetOption, console, progress, user_errors


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
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Tune WALS and the head inside each split's training part first (walrus "
            "tune's studies, [tune] settings): figures no tuned value has seen the test of.",
        ),
    ] = False,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='A filter as the service takes it, e.g. \'{"genres": {"any": ["Comedy"]}}\': '
            "every model ranks only the items it allows, and Recall@K counts only the "
            "held-out items among them (the interaction splits; not the query task).",
        ),
    ] = None,
) -> None:
    """Recall@K and NDCG@K of every model on every configured split."""
    from models.config import load_config
    from models.tuning import tuned_values

    cfg = load_config(config, set_)
    tuned: dict[str, PipelineConfig] | None = {} if tune else None
    spec = parse_filter(filter_)
    results, tuning = run_evaluation(cfg, chosen_models(models), tuned, spec)
    print_results(results, cfg.eval.ks)
    console.print(tuning, markup=False)  # it names [wals] and [head]: not rich markup
    if json_out is not None:
        write_json(json_out, cfg, tuning, tuned, results, spec)
    if report is not None:
        from models.report import write_eval_report

        about = (
            f"`walrus eval -c {config}`"
            + "".join(f" --set {s}" for s in set_ or [])
            + (" --tune" if tune else "")
            + (f" --filter '{json.dumps(spec)}'" if spec else "")
            + f": data {cfg.data.interactions}, encoder {cfg.encoder.name}. {tuning}"
            + "".join(
                f"\n\n- {name}: "
                + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in tuned_values(c).items()
                )
                for name, c in (tuned or {"all splits": cfg}).items()
            )
        )
        console.print(f"wrote {write_eval_report(results, cfg.eval.ks, report, about)}")


def write_json(
    path: Path,
    cfg: PipelineConfig,
    tuning: str,
    tuned: dict[str, PipelineConfig] | None,
    results: list[dict[str, Any]],
    spec: dict[str, Any] | None,
) -> None:
    from models.tuning import tuned_values

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": cfg.model_dump(mode="json"),
        "tuning": tuning,
        "tuned_per_split": {
            name: {**c.tuned_on.model_dump(), **tuned_values(c)}  # type: ignore[union-attr]
            for name, c in (tuned or {}).items()
        },
        "filter": spec,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {path}")


def parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WalrusError(
            f"--filter: not JSON ({exc.msg}); give {{field: {{op: value}}}}"
        ) from None
    if not isinstance(spec, dict):
        raise WalrusError("--filter: give a JSON object {field: {operator: value}}")
    return spec


def filter_mask(dataset: Dataset, spec: dict[str, Any] | None) -> np.ndarray | None:
    """The catalog items ``spec`` allows (item_id conditions by id); a ``FilterError``
    (a ``WalrusError``) names what does not fit the configured attributes."""
    from models.core.attributes import ItemAttributes, with_item_indices

    if spec is None:
        return None
    resolved = with_item_indices(spec, lambda ids, _where: dataset.items.lookup(ids)[0])
    return ItemAttributes(len(dataset.items), dataset.catalog.attributes).mask(resolved)


def chosen_models(models: str | None) -> dict[str, ModelFactory]:
    """The models ``--models`` names (all when none), or a one-line error."""
    from models.evaluation import MODELS

    if not models:
        return MODELS
    names = [m.strip() for m in models.split(",")]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise WalrusError(f"--models: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    return {m: MODELS[m] for m in names}


def run_evaluation(
    cfg: PipelineConfig,
    chosen: dict[str, ModelFactory],
    tuned: dict[str, PipelineConfig] | None = None,
    spec: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Every chosen model on every configured split, then the query task when the config
    has a query log and a catalog; with ``tuned`` (a dict to fill), each split tuned inside
    its training part first. Returns the rows and a sentence on where the values came from."""
    from models.data import read_catalog
    from models.evaluation import Shared, evaluate, evaluate_query_task
    from models.pipeline import load_dataset, load_query_log, make_split, observed
    from models.tuning import per_split_tuner, provenance

    dataset = load_dataset(cfg.data)
    allowed = filter_mask(dataset, spec)
    query_log = load_query_log(cfg.data.queries)
    splits = [make_split(dataset, s, cfg.split) for s in cfg.eval.splits if s != "queries"]
    catalog = cfg.data.catalog
    with_queries = "queries" in cfg.eval.splits and query_log is not None and catalog is not None
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(splits) * len(chosen) + int(with_queries))
        shared = Shared(cfg, dataset, query_log, lambda m: bar.update(task, description=m))
        tuner = None
        if tuned is not None:
            tuner = per_split_tuner(
                tuned, lambda s, n, v: bar.update(task, description=f"tuning {s} {n}: {v:.4f}")
            )
        results = evaluate(
            shared,
            splits,
            chosen,
            on_done=lambda s, m: bar.update(task, advance=1, description=f"{s}/{m}"),
            tuner=tuner,
            allowed=allowed,
        )
        if with_queries and allowed is None and query_log is not None and catalog is not None:
            results += evaluate_query_task(
                cfg, dataset, read_catalog(catalog), query_log, shared.progress, tuner
            )
            bar.advance(task)
    if "queries" in cfg.eval.splits and not with_queries:
        console.print("queries: skipped (the query task needs data.queries and data.catalog)")
    if tuned is not None:
        return results, (
            "Every split's [wals] and [head] values were tuned inside that split's training "
            "part (`--tune`); the test pairs were never scored while tuning."
        )
    trains = {s.name: s.train for s in splits}
    return results, provenance(cfg, observed(dataset), trains)


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
