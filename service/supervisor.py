"""``walrus serve`` in process mode: one engine process, F fronts, and their keeping.

The supervisor (the process ``walrus serve`` runs in) makes a private folder for the engine's
socket and the shared metrics files, starts the engine (``python -m service.engine``) and
starts it again whenever it exits (backing off while it keeps failing), then runs uvicorn
with F workers: the fronts, which uvicorn starts again when one dies. While the engine is
away the fronts answer 503 with ``Retry-After``. On SIGTERM or SIGINT uvicorn drains the
fronts first; the engine is stopped after them, and the folder removed.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess

from service.settings import ProcessPlan, Settings, plan_environment, variable

log = logging.getLogger("walrus.service.supervisor")
FRONT_APP = "service.front.app:create_app"
INLINE_APP = "service.inline:create_app"


class EngineProcess:
    """The engine, kept running: a thread waits on it and starts it again when it exits."""

    def __init__(self, env: dict[str, str], multiproc_dir: str | None) -> None:
        self.env = env
        self.multiproc_dir = multiproc_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="walrus-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _keep(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            started = time.monotonic()
            # Its own session: a terminal's Ctrl-C reaches the fronts, which drain; the
            # engine serves them until it is stopped after them.
            process = subprocess.Popen(
                [sys.executable, "-m", "service.engine"], env=self.env, start_new_session=True
            )
            self.process = process
            code = process.wait()
            if self._stopping.is_set():
                return
            if self.multiproc_dir:  # its gauges leave /metrics; its counters stay counted
                multiprocess.mark_process_dead(process.pid, self.multiproc_dir)  # type: ignore[no-untyped-call]
            if time.monotonic() - started > 60:
                delay = 0.5  # it had been serving: a new failure, not a loop
            self.restarts += 1
            log.error(
                "the engine (pid %d) exited with %s: starting it again in %.1f s",
                process.pid,
                code,
                delay,
            )
            self._stopping.wait(delay)
            delay = min(2 * delay, 10.0)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(settings: Settings, plan: ProcessPlan) -> None:
    """Run the engine and ``plan.workers`` fronts until SIGTERM or SIGINT."""
    run_dir = Path(tempfile.mkdtemp(prefix="walrus-serve-"))
    address = str(run_dir / "engine.sock")  # a Unix socket: see service/transport.py
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(run_dir / "metrics")
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    # Every process reads its settings from the environment: the fronts from uvicorn's.
    limit_native_threads(plan.threads)
    os.environ.update(
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        **plan_environment(plan),
        **{variable("engine", "address"): address},
    )
    engine = EngineProcess(dict(os.environ), metrics_dir)
    engine.start()
    try:
        run_uvicorn(FRONT_APP, settings, plan.workers)
    finally:
        engine.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def serve_inline(settings: Settings, plan: ProcessPlan) -> None:
    """Inline mode: ``plan.workers`` uvicorn workers, each holding the bundle."""
    # Every worker process sizes itself from the same resolved plan.
    limit_native_threads(plan.threads)
    os.environ.update(plan_environment(plan))
    if plan.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before the workers import prometheus_client: /metrics then sums all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="walrus-metrics-")
    run_uvicorn(INLINE_APP, settings, plan.workers)


BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads(threads: int) -> None:
    """BLAS and OpenMP pools sized by the plan, for every process started from here: unset,
    each would start one thread per host core whatever the CPU quota. Values the operator
    set are kept."""
    for name in BLAS_THREADS:
        os.environ.setdefault(name, str(threads))


def run_uvicorn(app: str, settings: Settings, workers: int) -> None:
    """``workers`` uvicorn processes of the app factory ``app`` (restarted when one dies)."""
    uvicorn.run(
        app,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,  # the fronts log each request themselves, as JSON with its id
        timeout_graceful_shutdown=graceful_timeout(settings),
        http="service.front.protocol:DeadlineProtocol",  # read deadline, header size limit
        limit_concurrency=settings.front.limit_concurrency or None,
        backlog=settings.front.backlog,
    )


def graceful_timeout(settings: Settings) -> int:
    """Whole seconds for uvicorn, rounded up; 0 is no wait. Never None, which uvicorn reads
    as "wait forever" (``int(0.5) or None`` was exactly that)."""
    return math.ceil(settings.front.graceful_timeout_s)
