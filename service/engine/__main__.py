"""``python -m service.engine``: the engine process that ``walrus serve`` starts."""

from service.engine.server import main

main()
