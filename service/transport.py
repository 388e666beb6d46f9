"""The wire between fronts and the engine: a Unix domain socket carrying length-prefixed
frames, each one message of ``service.messages`` in msgpack.

Chosen by measurement (docs/benchmarks.md, "Fronts and the engine"): on the 2-core machine a
round trip through asyncio on uvloop over a Unix socket took 0.065-0.078 ms at the median,
ZeroMQ over ``ipc://`` 0.12 ms even without asyncio (its I/O threads add a wake-up on each
side) and 0.21 ms with it. A stream socket also says at once when the peer dies: the
connection closes, and every call waiting on it is answered then.
"""

from __future__ import annotations

import struct

from models.core.errors import WalrusError

HEADER = struct.Struct("<I")
MAX_FRAME = 64 << 20  # a frame longer than this is a broken peer, not a message


class FrameError(WalrusError):
    """The peer sent something that is not a frame."""


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Bytes in as they arrive, whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                raise FrameError(f"a frame of {size} bytes")
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]
        return frames
