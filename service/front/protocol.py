"""uvicorn's httptools protocol with a deadline for receiving each request.

uvicorn times out idle keep-alive connections, but not a client that sends its headers or
its body slowly: such a client holds a connection, and its buffers, for as long as it likes
(slowloris). Here each request must arrive whole, headers and body, within
``WALRUS_FRONT__READ_TIMEOUT_S`` of its first byte (or of the connection, for the first request);
otherwise it gets 408 and the connection is closed. Headers larger than
``WALRUS_FRONT__MAX_HEADER_BYTES`` get 431 at once. Started as ``--http
service.front.protocol:DeadlineProtocol`` (``walrus serve`` does it).
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings


@lru_cache(maxsize=1)
def limits() -> tuple[float, int]:
    """(read timeout in seconds, largest header block in bytes), read once per process from
    the environment the supervisor gave it."""
    settings = Settings()
    return settings.front.read_timeout_s, settings.front.max_header_bytes


class DeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = True
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers still incomplete and already too long (a client that never ends them).
        if self._in_headers and self._header_bytes > limits()[1]:
            self._refuse(b"431 Request Header Fields Too Large")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        """Header bytes as the parser delivers them (a body in the same read never counts);
        past the limit the parse stops and ``send_400_response`` answers 431 instead."""
        self._header_bytes += n
        if self._header_bytes > limits()[1]:
            self._too_large = True
            raise ValueError("header block over WALRUS_FRONT__MAX_HEADER_BYTES")

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse(b"431 Request Header Fields Too Large")
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0
        if self._read_deadline is None:  # a keep-alive connection's next request
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # received whole: what the app does now has WALRUS_FRONT__DEADLINE_MS
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(limits()[0], self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if self.cycle is not None and self.cycle.response_started:
            return
        self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()
