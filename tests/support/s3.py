"""A real S3-compatible server for the object-storage tests: moto's standalone server
(``moto[server]``, the dev extra) in its own process on a free loopback port. Clients reach
it the way they reach MinIO or any other: ``AWS_ENDPOINT_URL`` and the usual ``AWS_*``
variables (``env``)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.support.servers import Background, free_port


class S3Server(Background):
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = folder / "moto.log"
        self.name = f"moto's server on port {self.port}"

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
        self.until_answering(timeout_s, self.log)
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
