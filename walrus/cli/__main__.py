"""``python -m walrus.cli``: the same program as the ``walrus`` script."""

from walrus.cli import app

app()
