"""A real uvicorn process on a free loopback port, and the helpers that wait on servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Background:
    """A server process of a test's own (``process``, started by the subclass's ``start``):
    waited for until it ``answers``, and a context manager that stops it."""

    name = "server"
    process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        raise NotImplementedError

    def until_answering(self, timeout_s: float, log: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited (the port taken?): see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never answered: see {log}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (Redis flushes its append-only file), then wait for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None


class Server:
    """``uvicorn service.inline:create_app`` (one process), or with ``cli`` the way operators
    start it, ``walrus serve`` (worker plan, multiprocess metrics)."""

    def __init__(
        self,
        bundle: Path | str,
        extra_args: list[str] | None = None,
        cli: bool = False,
        app: str = "service.inline:create_app",
        log_dir: Path | None = None,
        **env: str,
    ) -> None:
        """``log_dir``: where its log goes (default: beside the bundle, a local one)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "WALRUS_BUNDLE": str(bundle), "WALRUS_PORT": str(self.port), **env}
        log = (log_dir or Path(bundle).parent) / f"server-{self.port}.log"
        self.log = open(log, "w+")  # noqa: SIM115 -- lives as long as the server
        command = (
            [str(Path(sys.executable).with_name("walrus")), "serve"]
            if cli
            else [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--factory",
                "--http",
                "service.front.protocol:DeadlineProtocol",  # as walrus serve runs it
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "info",
            ]
        )
        self.process = subprocess.Popen(
            [*command, *(extra_args or [])],
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def wait(self, ready: bool = True, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if (r.status_code == 200) == ready and "loading" not in r.text:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not {'ready' if ready else 'up'}: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        """Terminate it (killed past 10 s); stopping twice is stopping once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.log.closed:
            self.log.close()


def eventually(check: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """``check()``'s first truthy value, polled every 50 ms: waits for a condition instead of
    sleeping a fixed time that a slow machine can outrun."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or check}")
        time.sleep(0.05)


def metric(text: str, name: str) -> float:
    """One unlabelled sample's value in a Prometheus exposition (0 when absent)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0
