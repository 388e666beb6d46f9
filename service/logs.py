"""The service's log lines: one JSON object per line, in every process (fronts and engine)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

import msgspec


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """One stderr handler on the ``walrus`` logger writing JSON lines (uvicorn configures
    only its own loggers)."""
    root = logging.getLogger("walrus")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False


class AccessLog:
    """One JSON line per request, the same shape as every other line, written straight to a
    file descriptor: the logging module's record, lock and formatter cost a quarter of a
    front's ``/healthz`` throughput (docs/benchmarks.md). Written only when the
    ``walrus.service.access`` logger is enabled for INFO (``WALRUS_LOG_LEVEL=info``)."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.enabled = logging.getLogger("walrus.service.access").isEnabledFor(logging.INFO)
        self._encode = msgspec.json.Encoder().encode
        self._second = -1
        self._stamp = ""

    def write(self, fields: dict[str, object]) -> None:
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
            )
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}",
            "level": "info",
            "logger": "walrus.service.access",
            "message": "request",
            **fields,
        }
        with contextlib.suppress(OSError):  # a closed stderr must not fail the request
            os.write(self.fd, self._encode(entry) + b"\n")
