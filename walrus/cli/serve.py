"""`walrus serve`: the HTTP service with the WALRUS_* settings."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from walrus.cli.common import console


def serve(
    bundle: Annotated[
        str | None,
        typer.Option(
            help="Bundle or bundles directory, or an s3:// bundles prefix (else WALRUS_BUNDLE)."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Else WALRUS_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Else WALRUS_PORT (8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Fronts, or inline workers (else WALRUS_FRONT__WORKERS; 0: auto)."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="process (one engine, several fronts) or inline (else WALRUS_MODE)."),
    ] = None,
) -> None:
    """Start the HTTP service with the WALRUS_* settings: one engine process that holds the
    bundle and fronts in front of it, or (inline) workers that each hold it."""
    import os

    from pydantic import ValidationError

    from service.settings import Settings, process_plan, variable

    given: dict[tuple[str, ...], object] = {("bundle",): bundle, ("host",): host}
    given |= {("port",): port, ("mode",): mode, ("front", "workers"): workers}
    for path, value in given.items():
        if value is not None:
            os.environ[variable(*path)] = str(value)  # every process builds its own Settings
    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = f"{variable(*map(str, err['loc']))}: " if err["loc"] else ""
        console.print(f"[red]error:[/red] {where}{err['msg']}", highlight=False)
        raise typer.Exit(2) from None
    from export.runtime import usable_cpus
    from service import supervisor

    plan = process_plan(settings, usable_cpus())
    logging.getLogger("walrus").setLevel(settings.log_level.upper())
    shape = (
        f"one engine ({plan.sessions} x {plan.threads} thread(s)) and {plan.workers} front(s)"
        if settings.mode == "process"
        else f"{plan.workers} inline worker(s) x {plan.threads} thread(s)"
    )
    console.print(
        f"walrus serve: {shape} for the {plan.cpus} CPU(s) this process may use",
        highlight=False,
    )
    if settings.mode == "process":
        supervisor.serve(settings, plan)
    else:
        supervisor.serve_inline(settings, plan)
