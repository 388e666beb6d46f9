"""``walrus``: the command-line program, one module per command group.

Each command imports the modules it drives when it runs, on purpose: `walrus serve` must not
load torch and `walrus data` must not load onnxruntime. This package is the only place that
does so; every other module imports at its top.
"""

from __future__ import annotations

from typing import Annotated

import typer

from walrus.cli import bundle, data, evaluate, retrain, serve, train, tune
from walrus.cli.common import configure_logging

app = typer.Typer(help="walrus: hybrid WALS + text recommender.", no_args_is_help=True)
app.add_typer(data.app, name="data")
app.add_typer(bundle.app, name="bundle")
app.add_typer(train.app, name="train")
app.command("export")(bundle.export)
app.command("serve")(serve.serve)
app.command("eval")(evaluate.eval_)
app.command("tune")(tune.tune_cmd)
app.command("retrain")(retrain.retrain_cmd)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    configure_logging(verbose)
