"""A real ``redis-server`` (Debian's package) on a loopback port with its append-only file in
a folder of the caller's: stopped and started again, it keeps what it acknowledged. The
events tests run it (``redis_or_skip``: skipped naming the install, or failed under CI=true), and
so do the benchmarks that need a Redis (``make soak``, ``make bench-events``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.servers import Background, free_port

INSTALL = "apt-get install redis-server"


class RedisServer(Background):
    """``port`` None: a free one, so that runs side by side (or a port left taken) never meet."""

    def __init__(self, folder: Path, port: int | None = None, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(f"redis-server is not installed ({INSTALL})")
        port = free_port() if port is None else port
        self.binary, self.folder, self.port = found, folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.name = f"redis-server on port {port}"

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            # Every acknowledged write is on disk before the reply, as the image runs it.
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--enable-debug-command", "local",  # DEBUG SLEEP: a slow Redis on demand
        ]  # fmt: skip
        log = self.folder / "redis.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.until_answering(timeout_s, log)
        return self

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)


def redis_or_skip(folder: Path) -> RedisServer:
    """A Redis for a test: without ``redis-server`` the test skips naming the install, except
    under CI=true, where it fails (``tool_or_skip``)."""
    # Here, not at the top: the benchmarks use this module without pytest.
    from tests.support.tools import tool_or_skip

    return RedisServer(folder, binary=tool_or_skip("redis-server", INSTALL))
