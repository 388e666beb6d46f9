"""The dynamic batcher: concurrent submissions share batches, each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.engine.batcher import Batcher


def run(coro):
    return asyncio.run(coro)


async def queued() -> None:
    """Let every task made so far reach its ``submit``'s put (no timing involved: tasks
    scheduled before this yield run before it returns)."""
    await asyncio.sleep(0)


def test_concurrent_requests_are_batched_and_answered_in_order():
    sizes: list[int] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        gate.wait(5)  # hold the first batch so the rest queue up behind it
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, max_batch=64, workers=1, on_batch=sizes.append)

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(50)]
        await queued()
        gate.set()
        return list(await asyncio.gather(*tasks))

    try:
        assert run(main()) == [i * 10 for i in range(50)]
    finally:
        batcher.close()
    assert sum(sizes) == 50
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert len(sizes) < 50


def test_max_batch_is_respected():
    sizes: list[int] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        gate.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(process, max_batch=4, workers=1, on_batch=sizes.append)

    async def main() -> None:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(20)]
        await queued()
        gate.set()
        await asyncio.gather(*tasks)

    try:
        run(main())
    finally:
        batcher.close()
    assert max(sizes) <= 4 and sum(sizes) == 20


def test_wait_gathers_requests_arriving_later():
    sizes: list[int] = []
    batcher: Batcher[int, int] = Batcher(
        lambda items: items, max_batch=4, wait_us=5_000_000, workers=1, on_batch=sizes.append
    )

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.02)  # later than the first; the batch closes when 4 have come
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
        await asyncio.gather(first, *rest)

    try:
        run(main())
    finally:
        batcher.close()
    assert sizes == [4]


def test_an_exception_result_goes_to_its_caller_only():
    def process(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"bad {i}") if i == 3 else i for i in items]

    batcher: Batcher[int, int] = Batcher(process, max_batch=16, workers=1)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)

    try:
        results = run(main())
    finally:
        batcher.close()
    assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5]
    assert isinstance(results[3], ValueError) and "bad 3" in str(results[3])


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    calls = []

    def process(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    batcher: Batcher[int, int] = Batcher(process, max_batch=1, workers=1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run(batcher.submit(1))
        assert run(batcher.submit(2)) == 2
    finally:
        batcher.close()


def test_close_serves_what_is_queued_then_stops():
    batcher: Batcher[int, int] = Batcher(lambda items: (time.sleep(0.01), items)[1], workers=2)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert run(main()) == list(range(10))
    batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Batcher(lambda items: items, max_batch=0)


def test_a_full_queue_sheds_at_once():
    from service.engine.batcher import Overloaded

    gate = threading.Event()
    batcher: Batcher[int, int] = Batcher(
        lambda items: (gate.wait(5), items)[1], max_batch=1, workers=1, max_queue=2
    )

    async def main() -> list[object]:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
        await queued()
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = run(main())
    finally:
        batcher.close()
    shed = [r for r in results if isinstance(r, Overloaded)]
    assert shed and len(shed) < 6
    assert all(isinstance(r, int) for r in results if not isinstance(r, Overloaded))


def test_an_abandoned_request_is_never_processed():
    seen: list[int] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        seen.extend(items)
        gate.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(process, max_batch=1, workers=1)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(1))  # occupies the worker
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(2), timeout=0.05)  # gives up while queued
        gate.set()
        await first
        assert await batcher.submit(3) == 3

    try:
        run(main())
    finally:
        batcher.close()
    assert seen == [1, 3]


def test_a_failing_batch_is_retried_request_by_request():
    """One request that makes the whole batch raise fails alone: the others are served
    again one by one and get their answers."""
    gate = threading.Event()
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(items)
        if 13 in items:
            raise ValueError("13 breaks any batch it is in")
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, max_batch=64, workers=1)

    async def main() -> list[int | BaseException]:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(20)]
        await queued()
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    try:
        results = run(main())
    finally:
        batcher.close()
    assert [r for i, r in enumerate(results) if i != 13] == [i * 10 for i in range(20) if i != 13]
    assert isinstance(results[13], ValueError)
    assert any(len(c) > 1 and 13 in c for c in calls)  # it did fail a real batch first


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_killed_by_a_base_exception_answers_its_batch_and_is_revived():
    """SystemExit out of a batch ends that worker thread, but its callers get an error at
    once (not a timeout), ``dead`` sees it and ``revive`` brings a worker back."""
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise SystemExit("a library called sys.exit")
        return items

    batcher: Batcher[int, int] = Batcher(process, max_batch=1, workers=1)
    try:
        with pytest.raises(RuntimeError, match="batcher thread died: SystemExit"):
            run(asyncio.wait_for(batcher.submit(1), 5))
        batcher._threads[0].join(5)
        assert batcher.dead() == 1 and batcher.deaths == 1
        assert batcher.revive() == 1 and batcher.dead() == 0 and batcher.revive() == 0
        assert run(asyncio.wait_for(batcher.submit(2), 5)) == 2
    finally:
        batcher.close()


def test_a_failing_metrics_callback_does_not_end_the_thread():
    def broken(_: int) -> None:
        raise ValueError("a metrics bug")

    batcher: Batcher[int, int] = Batcher(
        lambda items: items, max_batch=1, workers=1, on_batch=broken, on_depth=broken
    )
    try:
        assert [run(batcher.submit(i)) for i in range(3)] == [0, 1, 2]
        assert batcher.dead() == 0
    finally:
        batcher.close()
