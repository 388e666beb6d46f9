"""`walrus serve`: the HTTP service with the WALRUS_* settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from walrus.cli.common import console


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
