"""A real S3-compatible server for the object-storage tests: moto's standalone server
(``moto[server]``, the dev extra) in its own process on a free loopback port. Clients reach
it the way they reach MinIO or any other: ``AWS_ENDPOINT_URL`` and the usual ``AWS_*``
variables (``env``)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support.servers import free_port


class S3Server:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = folder / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "walrus-test",
            "AWS_SECRET_ACCESS_KEY": "walrus-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout_s: float = 30.0) -> S3Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"moto's server exited: see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto's server on port {self.port} never answered")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def bucket(self) -> str:
        """A new empty bucket; its name."""
        name = f"walrus-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.endpoint}/{name}", timeout=10).raise_for_status()
        return name

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None
