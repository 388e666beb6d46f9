"""The engine process: ``python -m service.engine``, started and restarted by ``walrus serve``.

One per machine (per device): the only process that holds the bundle. It binds a ZeroMQ
ROUTER socket on a local ``ipc://`` address; every front connects a DEALER to it. A call is
one msgpack frame (``service.messages``), answered by one; each call runs as a task on this
process's event loop, and the batcher serves the tasks of all fronts together.

The engine exits when its parent (the supervisor) is gone, so no orphan holds the bundle.
It ignores SIGINT (a terminal's Ctrl-C reaches the whole process group, and the fronts must
drain first); the supervisor stops it with SIGTERM after the fronts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import msgspec
import zmq
import zmq.asyncio

from service.engine.engine import Engine
from service.logs import configure_logging
from service.messages import Answer, Cancel, decode_call, encode
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("walrus.service.engine")


class EngineServer:
    """The engine behind a ROUTER socket."""

    def __init__(self, engine: Engine, address: str) -> None:
        self.engine = engine
        self.address = address
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a front gone: drop its answers
        self.pending: dict[tuple[bytes, int], asyncio.Task[None]] = {}

    async def serve(self) -> None:
        self.socket.bind(self.address)
        log.info("engine listening on %s", self.address)
        while True:
            identity, data = await self.socket.recv_multipart(copy=True)
            try:
                call = decode_call(data)
            except msgspec.DecodeError as exc:
                log.error("undecodable call from a front, dropped: %s", exc)
                continue
            key = (identity, call.id)
            if isinstance(call, Cancel):
                task = self.pending.pop(key, None)
                if task is not None:
                    task.cancel()  # still queued: the batcher skips it
                continue
            self.pending[key] = asyncio.create_task(self._answer(identity, key, call))

    async def _answer(self, identity: bytes, key: tuple[bytes, int], call: object) -> None:
        try:
            answer: Answer = await self.engine.answer(call)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            return
        finally:
            self.pending.pop(key, None)
        await self.socket.send_multipart([identity, encode(answer)], copy=False)

    def close(self) -> None:
        for task in self.pending.values():
            task.cancel()
        self.context.destroy(linger=0)


async def exit_with_parent(parent: int, stop: asyncio.Event) -> None:
    """The supervisor died (even by SIGKILL): stop, rather than hold the bundle forever."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.error("the supervisor (pid %d) is gone: stopping", parent)
    stop.set()


async def run(settings: Settings, address: str) -> None:
    engine = Engine(settings, Metrics())
    server = EngineServer(engine, address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks = [
        asyncio.create_task(server.serve()),
        asyncio.create_task(engine.start()),
        asyncio.create_task(engine.bundles.watch()),
        asyncio.create_task(exit_with_parent(os.getppid(), stop)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    server.close()
    await engine.close()


def main() -> None:
    """The engine process: its settings from the WALRUS_* environment (as the supervisor
    passes it), its socket at WALRUS_ENGINE_ADDRESS."""
    settings = Settings()
    configure_logging(settings.log_level)
    if not settings.engine_address:
        raise SystemExit("error: WALRUS_ENGINE_ADDRESS: the engine's socket, e.g. ipc:///tmp/e")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the serve extra names it; without it the default loop serves
        pass
    asyncio.run(run(settings, settings.engine_address))
