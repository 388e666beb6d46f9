"""The round trip a front adds to reach the engine (a Unix socket, msgspec frames),
measured with ``Status`` calls one at a time (concurrency 1): the engine answers them from its
event loop at once, so what is left is the transport. The same calls made on an engine in
this process (inline mode) are the baseline; the difference is what the transport costs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.engine import Engine
from service.front.client import EngineClient
from service.messages import Status
from service.metrics import Metrics
from service.settings import Settings


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "calls": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


async def through_the_socket(address: str, calls: int) -> list[float]:
    client = EngineClient(address)
    await client.start()
    try:
        deadline = time.monotonic() + 60
        while not client.connected:  # the engine binds its socket as it starts
            if time.monotonic() > deadline:
                raise TimeoutError("the engine never answered")
            await asyncio.sleep(0.05)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await client.submit(Status(client.next_id()))
            times.append(time.perf_counter() - start)
        return times
    finally:
        await client.close()


async def in_process(bundle: Path, calls: int) -> list[float]:
    engine = Engine(Settings(bundle=bundle), Metrics())
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await engine.answer(Status())
        times.append(time.perf_counter() - start)
    return times


def measure(bundle: Path, calls: int = 5000) -> dict[str, Any]:
    """Median and p99 of ``calls`` Status round trips through the socket and in process."""
    with tempfile.TemporaryDirectory(prefix="walrus-transport-") as tmp:
        address = str(Path(tmp) / "engine.sock")
        env = {**os.environ, "WALRUS_BUNDLE": str(bundle), "WALRUS_ENGINE__ADDRESS": address}
        engine = subprocess.Popen([sys.executable, "-m", "service.engine"], env=env)
        try:
            socket = summary(asyncio.run(through_the_socket(address, calls)))
        finally:
            engine.terminate()
            engine.wait(30)
    inline = summary(asyncio.run(in_process(bundle, calls)))
    return {
        "socket": socket,
        "inline": inline,
        "added_p50_ms": socket["p50_ms"] - inline["p50_ms"],
        "added_p99_ms": socket["p99_ms"] - inline["p99_ms"],
    }
