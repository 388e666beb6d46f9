"""What every command shares: the console, the one-line error rule, progress bars, the
config options."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from models.core.errors import WalrusError

console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Pipeline TOML config.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: section.field=value.")
]


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn walrus' own errors (``WalrusError``: bad input, a bad artifact, a failed check)
    into one line on stderr and exit status 2. Anything else is a bug: its traceback shows."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except WalrusError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


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


def with_progress(label: str, work: Callable[[Callable[[str], None]], R]) -> R:
    """``work(say)`` under a spinner whose line shows what ``say`` last reported; then done."""
    with progress() as bar:
        task = bar.add_task(label, total=None)
        result = work(lambda message: bar.update(task, description=message))
        bar.update(task, description="done", completed=1, total=1)
    return result


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
