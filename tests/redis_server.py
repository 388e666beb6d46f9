"""The real ``redis-server`` of ``bench.redis_server`` on a free port, for the events tests:
without it a test skips naming the install, except under CI=true, where it fails."""

from __future__ import annotations

from pathlib import Path

from bench import redis_server
from tests.conftest import tool_or_skip


class RedisServer(redis_server.RedisServer):
    def __init__(self, folder: Path) -> None:
        binary = tool_or_skip("redis-server", redis_server.INSTALL)
        super().__init__(folder, binary=binary)
