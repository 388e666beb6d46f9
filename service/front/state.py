"""What a front's routes share."""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.front.client import EngineLink
from service.metrics import Metrics
from service.settings import Settings


class FailedAttempts:
    """Wrong admin tokens per client address in fixed one-minute windows: past ``limit``
    the address waits for the window's end (a guess costs time, not just a request)."""

    WINDOW_S = 60.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._windows: dict[str, tuple[float, int]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait before trying again; 0: it may try now."""
        start, count = self._windows.get(client, (0.0, 0))
        left = start + self.WINDOW_S - time.monotonic()
        if left <= 0:
            self._windows.pop(client, None)
            return 0
        return int(left) + 1 if count >= self.limit else 0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        if len(self._windows) > 10_000:  # bounded: forget windows that are over
            self._windows = {k: v for k, v in self._windows.items() if v[0] + self.WINDOW_S > now}
        start, count = self._windows.get(client, (now, 0))
        if start + self.WINDOW_S <= now:
            start, count = now, 0
        self._windows[client] = (start, count + 1)


@dataclass
class Front:
    """What the routes share: the settings, the engine link, the metrics, the drain flag,
    the admin route's failed attempts."""

    settings: Settings
    engine: EngineLink
    metrics: Metrics
    admin_failures: FailedAttempts
    draining: bool = False
