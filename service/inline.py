"""Inline mode: a front with the engine inside its own process (``WALRUS_MODE=inline``).

For tests and the smallest machines: one process holds everything, as ``uvicorn
service.inline:create_app --factory`` starts it. With several uvicorn workers each holds its
own bundle and batches alone; process mode (``walrus serve``'s default) shares one engine.
"""

from __future__ import annotations

import asyncio
import itertools

from fastapi import FastAPI

from service.engine.engine import Engine
from service.front.app import build_app
from service.messages import Answer, Call
from service.metrics import Metrics
from service.settings import Settings


class InlineLink:
    """An ``EngineLink`` to an engine in this process: a call is a task on this loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    def next_id(self) -> int:
        return next(self._ids)

    async def start(self) -> None:
        # The port opens at once; /readyz says "loading" until the bundle is loaded and warm.
        self._tasks = [
            asyncio.create_task(self.engine.start()),
            asyncio.create_task(self.engine.bundles.watch()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.engine.close()

    def submit(self, call: Call) -> asyncio.Future[Answer]:
        return asyncio.ensure_future(self.engine.answer(call))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    return build_app(settings, InlineLink(Engine(settings, metrics)), metrics)
