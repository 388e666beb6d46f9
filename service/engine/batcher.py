"""Dynamic batching, as Triton's dynamic batcher does it.

The event loop hands each request to the batcher once (``submit``). Worker threads take what
is queued, up to ``max_batch`` requests (with no added delay by default; ``wait_us`` lets a
worker wait that long for more), serve them with one call of ``process``, and resolve each
request's future with its own result. Several workers let one batch be encoded while the
previous one is searched and reranked.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from models.core.errors import WalrusError
from service.api import Unavailable

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future[R], result: R | BaseException) -> None:
    if future.cancelled():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Overloaded(Unavailable):
    """The queue in front of the batcher is full: shed the request (503, Retry-After)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"overloaded ({why}): retry shortly", retry_after=1)


class Stopped(WalrusError):
    """``submit`` after ``stop``: the bundle was swapped; the caller submits to the new one."""


class Batcher(Generic[T, R]):
    """Gathers concurrent ``submit`` calls into batches for ``process``.

    ``process`` takes a list of items and returns one result per item, in order; a result
    that is an exception is raised to that item's caller. If ``process`` itself raises, each
    item of the batch is processed again alone, and only the callers whose item fails alone
    get an exception.
    """

    def __init__(
        self,
        process: Callable[[list[T]], list[R | Exception]],
        *,
        max_batch: int = 32,
        wait_us: int = 0,
        workers: int = 1,
        max_queue: int = 0,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_failed_batch: Callable[[int], None] | None = None,
        name: str = "walrus-batcher",
    ) -> None:
        if max_batch < 1 or workers < 1 or wait_us < 0:
            raise ValueError("max_batch and workers must be >= 1, wait_us >= 0")
        self.process = process
        self.max_batch = max_batch
        self.wait_s = wait_us / 1e6
        self.max_queue = max_queue  # 0: unbounded
        self.on_batch = on_batch
        self.on_depth = on_depth  # told the queue depth whenever it changes: a gauge
        self.on_failed_batch = on_failed_batch  # told the size of a batch that raised
        self._queue: queue.SimpleQueue[_Pending[T, R] | None] = queue.SimpleQueue()
        self._stopped = False
        self.name = name
        self.deaths = 0  # worker threads that died (a BaseException out of ``process``)
        self._threads = [self._thread(i) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _thread(self, i: int) -> threading.Thread:
        return threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)

    def dead(self) -> int:
        """Worker threads that ended while the batcher still serves."""
        if self._stopped:
            return 0
        return sum(not t.is_alive() for t in self._threads)

    def revive(self) -> int:
        """Start a new thread for each dead one; how many were started. Cheap enough to
        call before every request."""
        if not self.dead():
            return 0
        revived = 0
        for i, thread in enumerate(self._threads):
            if not thread.is_alive():
                self._threads[i] = self._thread(i)
                self._threads[i].start()
                revived += 1
        log.error("%d batcher thread(s) had died and were started again", revived)
        return revived

    async def submit(self, item: T) -> R:
        """The item's result; ``Overloaded`` at once when ``max_queue`` requests already wait.
        Cancelling the caller (a deadline, a disconnect) drops the item if it is still
        queued."""
        if self._stopped:
            raise Stopped("this batcher was stopped: submit to its successor")
        if self.max_queue and self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} requests are queued")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put(_Pending(item, future, loop))
        self._tell(self.on_depth, self._queue.qsize())
        return await future

    def stop(self) -> None:
        """Take no more requests; those queued so far are still served. Call it on the event
        loop's thread, where ``submit`` runs: no request can then be queued behind the
        workers' stop signals."""
        self._stopped = True
        for _ in self._threads:
            self._queue.put(None)

    def join(self) -> None:
        """Wait until the workers have served what was queued before ``stop`` (blocking)."""
        for thread in self._threads:
            thread.join()

    def close(self) -> None:
        self.stop()
        self.join()

    def _gather(self, first: _Pending[T, R]) -> tuple[list[_Pending[T, R]], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                pending = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if pending is None:  # this worker's stop signal: serve the batch, then stop
                stop = True
                break
            batch.append(pending)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._tell(self.on_depth, self._queue.qsize())
            batch = [p for p in batch if not p.future.cancelled()]  # abandoned: skip the work
            if not batch:
                if stop:
                    return
                continue
            self._serve(batch)
            if stop:
                return

    def _tell(self, callback: Callable[[int], None] | None, value: int) -> None:
        """A metrics callback that raises must not end the thread."""
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("batcher callback %r failed", callback)

    def _serve(self, batch: list[_Pending[T, R]]) -> None:
        """Process one batch and hand each caller its result, on its own event loop. A
        BaseException (``SystemExit`` from a library, ...) ends this thread, but not before
        every caller of the batch has its answer: ``revive`` starts a new one."""
        self._tell(self.on_batch, len(batch))
        try:
            try:
                results = self._process([p.item for p in batch])
            except Exception as exc:
                self._tell(self.on_failed_batch, len(batch))
                # One bad request must not fail the others: each is served again alone, and
                # only the one that fails alone gets the exception.
                results = [self._alone(p.item) for p in batch] if len(batch) > 1 else [exc]
        except BaseException as exc:
            self.deaths += 1
            failed = RuntimeError(f"the batcher thread died: {type(exc).__name__}")
            for pending in batch:
                pending.loop.call_soon_threadsafe(_resolve, pending.future, failed)
            log.critical("batcher thread %s dies", threading.current_thread().name, exc_info=True)
            raise
        for pending, result in zip(batch, results, strict=True):
            pending.loop.call_soon_threadsafe(_resolve, pending.future, result)

    def _process(self, items: list[T]) -> list[R | BaseException]:
        results: list[R | BaseException] = list(self.process(items))
        if len(results) != len(items):
            raise RuntimeError(f"process returned {len(results)} results for {len(items)}")
        return results

    def _alone(self, item: T) -> R | BaseException:
        try:
            return self._process([item])[0]
        except Exception as exc:
            return exc
