"""How a front reaches the engine: the ``EngineLink`` protocol, and ``EngineClient``, which
speaks to the engine process over a ZeroMQ DEALER socket on its ``ipc://`` address.

The client never lets a request wait on an engine that is not there. ``IMMEDIATE`` keeps a
call from queueing while no engine is connected (it is answered 503 at once); a socket
monitor sees the engine's connection drop the moment the process dies, and every call in
flight is answered 503 with ``Retry-After`` then. ZeroMQ reconnects by itself when the
supervisor has started a new engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from functools import partial
from typing import Protocol

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from service.messages import Answer, Call, Cancel, decode_answer, encode, error

log = logging.getLogger("walrus.service.front")

UNAVAILABLE = "engine unavailable: it is restarting, retry shortly"


class EngineLink(Protocol):
    """What a front needs of an engine, wherever it runs."""

    def next_id(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def submit(self, call: Call) -> asyncio.Future[Answer]:
        """The call's answer, to await; cancelling the future cancels the call."""
        ...


class EngineClient:
    """An ``EngineLink`` to the engine process."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.connected = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def next_id(self) -> int:
        return next(self._ids)

    async def start(self) -> None:
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for an absent engine
        self.socket.setsockopt(zmq.RECONNECT_IVL, 50)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        monitor = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.socket.connect(self.address)
        self._tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._watch(monitor)),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._fail_all()
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disable_monitor()
        self.context.destroy(linger=0)  # every socket, the monitor's too: term() would wait

    def submit(self, call: Call) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if not self.connected:
            future.set_result(error(call.id, 503, UNAVAILABLE, retry_after=1))
            return future
        try:
            self.socket.send(encode(call), zmq.NOBLOCK)
        except zmq.Again:  # no connected engine (IMMEDIATE), or its queue is full
            future.set_result(error(call.id, 503, UNAVAILABLE, retry_after=1))
            return future
        self._waiting[call.id] = future
        future.add_done_callback(partial(self._done, call.id))
        return future

    def _done(self, call_id: int, future: asyncio.Future[Answer]) -> None:
        self._waiting.pop(call_id, None)
        if future.cancelled() and self.connected:
            with contextlib.suppress(zmq.ZMQError):  # best effort: the answer is unread anyway
                self.socket.send(encode(Cancel(call_id)), zmq.NOBLOCK)

    async def _read(self) -> None:
        while True:
            data = await self.socket.recv()
            try:
                answer = decode_answer(data)
            except Exception as exc:  # a bug in the engine: log, never crash the reader
                log.error("undecodable answer from the engine: %s", exc)
                continue
            future = self._waiting.pop(answer.id, None)
            if future is not None and not future.done():
                future.set_result(answer)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                log.info("connected to the engine at %s", self.address)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
                log.warning("the engine at %s went away", self.address)
                self._fail_all()

    def _fail_all(self) -> None:
        """Every call in flight answered 503 now: its engine is gone, and the one the
        supervisor starts next will not know it."""
        waiting, self._waiting = self._waiting, {}
        for call_id, future in waiting.items():
            if not future.done():
                future.set_result(error(call_id, 503, UNAVAILABLE, retry_after=1))
