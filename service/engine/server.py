"""The engine process: ``python -m service.engine``, started and restarted by ``walrus serve``.

One per machine (per device): the only process that holds the bundle. It listens on a Unix
domain socket (``WALRUS_ENGINE__ADDRESS``, a path); every front keeps one connection to it.
A call is one frame (``service.transport``, ``service.messages``), answered by one; each call
runs as a task on this process's event loop, and the batcher serves the tasks of all fronts
together.

The engine exits when its parent (the supervisor) is gone, so no orphan holds the bundle.
It ignores SIGINT (a terminal's Ctrl-C reaches the whole process group, and the fronts must
drain first); the supervisor stops it with SIGTERM after the fronts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import msgspec
import uvloop

from service.engine.engine import Engine
from service.logs import configure_logging
from service.messages import Call, Cancel, decode_call, encode
from service.metrics import Metrics
from service.settings import Settings
from service.transport import FrameError, FrameReader, frame

log = logging.getLogger("walrus.service.engine")


class FrontConnection(asyncio.Protocol):
    """One front's connection: its calls in, their answers out, its pending tasks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader = FrameReader()
        self.pending: dict[int, asyncio.Task[None]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            log.error("a front sent %s: closing its connection", exc)
            self._close()
            return
        for payload in frames:
            try:
                self._take(decode_call(payload))
            except msgspec.DecodeError as exc:
                log.error("undecodable call from a front, dropped: %s", exc)

    def _take(self, call: Call) -> None:
        if isinstance(call, Cancel):
            task = self.pending.pop(call.id, None)
            if task is not None:
                task.cancel()  # still queued: the batcher skips it
        else:
            self.pending[call.id] = asyncio.create_task(self._answer(call))

    async def _answer(self, call: Call) -> None:
        try:
            answer = await self.engine.answer(call)
        except asyncio.CancelledError:
            return
        finally:
            self.pending.pop(call.id, None)
        self._send(encode(answer))

    def _send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(payload))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.pending.values():  # the front is gone: nobody reads these answers
            task.cancel()
        self.pending.clear()
        self.transport = None


async def exit_with_parent(parent: int, stop: asyncio.Event) -> None:
    """The supervisor died (even by SIGKILL): stop, rather than hold the bundle forever."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.error("the supervisor (pid %d) is gone: stopping", parent)
    stop.set()


async def run(settings: Settings, address: str) -> None:
    engine = Engine(settings, Metrics())
    loop = asyncio.get_running_loop()
    path = Path(address)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket file left by an engine that died
    server = await loop.create_unix_server(lambda: FrontConnection(engine), str(path))
    log.info("engine listening on %s", path)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks = [
        asyncio.create_task(engine.start()),
        asyncio.create_task(engine.bundles.watch()),
        asyncio.create_task(exit_with_parent(os.getppid(), stop)),
    ]
    await stop.wait()
    server.close()
    for task in tasks:
        task.cancel()
    await engine.close()


def main() -> None:
    """The engine process: its settings from the WALRUS_* environment (as the supervisor
    passes it), its socket at WALRUS_ENGINE__ADDRESS."""
    settings = Settings()
    configure_logging(settings.log_level)
    if not settings.engine.address:
        raise SystemExit("error: WALRUS_ENGINE__ADDRESS: the engine's socket path is not set")
    uvloop.install()  # the serve extra's event loop, as uvicorn's fronts use
    asyncio.run(run(settings, settings.engine.address))
