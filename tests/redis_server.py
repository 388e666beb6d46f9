"""A real ``redis-server`` (Debian's package) on a free loopback port, with its append-only
file in a folder of the test's: stopped and started again, it keeps what it acknowledged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.conftest import tool_or_skip
from tests.server import eventually, free_port

INSTALL = "apt-get install redis-server"


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.binary = tool_or_skip("redis-server", INSTALL)
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            # Every acknowledged write is on disk before the reply, as docker-compose.yml runs it.
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--enable-debug-command", "local",  # DEBUG SLEEP: a slow Redis on demand
        ]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        eventually(self.answers, 20, "redis-server answers PING")
        return self

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(20)
        self.process = None
