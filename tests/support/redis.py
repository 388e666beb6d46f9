"""A real ``redis-server`` (Debian's package) on a loopback port with its append-only file in
a folder of the caller's: stopped and started again, it keeps what it acknowledged. The
events tests run it (``redis_or_skip``: skipped naming the install, or failed under CI=true), and
so do the benchmarks that need a Redis (``make soak``, ``make bench-events``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.servers import free_port

INSTALL = "apt-get install redis-server"


class RedisServer:
    """``port`` None: a free one, so that runs side by side (or a port left taken) never meet."""

    def __init__(self, folder: Path, port: int | None = None, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(f"redis-server is not installed ({INSTALL})")
        port = free_port() if port is None else port
        self.binary, self.folder, self.port = found, folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

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
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None:  # e.g. the port was taken
                raise RuntimeError(f"redis-server exited: see {self.folder / 'redis.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} never answered PING")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(20)
        self.process = None


def redis_or_skip(folder: Path) -> RedisServer:
    """A Redis for a test: without ``redis-server`` the test skips naming the install, except
    under CI=true, where it fails (``tool_or_skip``)."""
    # Here, not at the top: the benchmarks use this module without pytest.
    from tests.support.tools import tool_or_skip

    return RedisServer(folder, binary=tool_or_skip("redis-server", INSTALL))
