"""How a front reaches the engine: the ``EngineLink`` protocol, and ``EngineClient``, which
keeps one connection to the engine process's Unix socket (``service.transport``).

The client never lets a request wait on an engine that is not there. While it has no
connection a call is answered 503 with ``Retry-After`` at once; when the connection closes
(the engine died) every call in flight is answered so the moment the kernel says it; and it
connects again, every 50 ms, until the engine the supervisor starts next is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from functools import partial
from typing import Protocol

from service.api import Failure
from service.messages import Answer, Call, Cancel, decode_answer, encode, failed
from service.transport import FrameError, FrameReader, frame

log = logging.getLogger("walrus.service.front")

UNAVAILABLE = "engine unavailable: it is restarting, retry shortly"
RECONNECT_S = 0.05
GONE = Failure("unavailable", UNAVAILABLE, retry_after=1)


class EngineLink(Protocol):
    """What a front needs of an engine, wherever it runs."""

    def next_id(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def submit(self, call: Call) -> asyncio.Future[Answer]:
        """The call's answer, to await; cancelling the future cancels the call."""
        ...


class EngineClient(asyncio.Protocol):
    """An ``EngineLink`` to the engine process at the socket path ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._open() is not None

    def _open(self) -> asyncio.Transport | None:
        """The connection to the engine, when there is one that is not closing."""
        transport = self.transport
        return transport if transport is not None and not transport.is_closing() else None

    def next_id(self) -> int:
        return next(self._ids)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()
        self._fail_all()

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.create_unix_connection(lambda: self, self.address)
            except OSError:  # not listening yet: the engine is starting
                await asyncio.sleep(RECONNECT_S)
                continue
            log.info("connected to the engine at %s", self.address)
            self._lost.clear()
            await self._lost.wait()

    def submit(self, call: Call) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        transport = self._open()
        if transport is None:
            future.set_result(failed(call.id, GONE))
            return future
        transport.write(frame(encode(call)))
        self._waiting[call.id] = future
        future.add_done_callback(partial(self._done, call.id))
        return future

    def _done(self, call_id: int, future: asyncio.Future[Answer]) -> None:
        self._waiting.pop(call_id, None)
        transport = self._open()
        if future.cancelled() and transport is not None:
            transport.write(frame(encode(Cancel(call_id))))

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._reader = FrameReader()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            log.error("the engine sent %s: reconnecting", exc)
            if self.transport is not None:
                self.transport.close()
            return
        for payload in frames:
            try:
                answer = decode_answer(payload)
            except Exception as exc:  # a bug in the engine: log, never crash the reader
                log.error("undecodable answer from the engine: %s", exc)
                continue
            future = self._waiting.pop(answer.id, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        log.warning("the engine at %s went away", self.address)
        self.transport = None
        self._fail_all()
        self._lost.set()

    def _fail_all(self) -> None:
        """Every call in flight answered 503 now: its engine is gone, and the one the
        supervisor starts next will not know it."""
        waiting, self._waiting = self._waiting, {}
        for call_id, future in waiting.items():
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result(failed(call_id, GONE))
