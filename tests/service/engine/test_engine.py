"""The engine in-process: admission control of /similar."""

from __future__ import annotations

import asyncio
import threading

from service.engine.engine import Engine
from service.messages import Similar, Users
from service.metrics import Metrics
from service.settings import Settings


def test_a_similar_flood_is_shed_past_the_queue_limit(tiny_bundle):
    """One /similar thread, held; WALRUS_ENGINE__MAX_QUEUE=2: two calls wait, the rest get 503 at
    once (with Retry-After), and the two are answered once the thread is free."""
    engine = Engine(
        Settings(
            bundle=tiny_bundle, engine={"reload_interval_s": 0, "sessions": 1, "max_queue": 2}
        ),
        Metrics(),
    )
    gate = threading.Event()

    async def main() -> list[int]:
        await engine.start()
        try:
            recommender = engine.bundles.recommender()
            served = recommender.similar
            recommender.similar = lambda call: (gate.wait(10), served(call))[1]  # type: ignore[method-assign]
            item = recommender.items.ids[0]
            calls = [
                asyncio.ensure_future(engine.answer(Similar(item_id=item, k=3, id=i)))
                for i in range(6)
            ]
            await asyncio.sleep(0)  # every call has been admitted or shed
            shed = [c for c in calls if c.done()]
            assert len(shed) == 4 and all(c.result().failure.retry_after == 1 for c in shed)
            gate.set()
            return [(await c).failure is None for c in calls]
        finally:
            await engine.close()

    statuses = asyncio.run(main())
    assert sorted(statuses) == [False, False, False, False, True, True]
    assert engine.similar_waiting == 0


def test_every_answer_names_the_serving_bundle_for_the_access_log(tiny_bundle):
    """User ids carry no bundle id in their body; their answer names the bundle all the same
    (the front's access log reads it)."""
    engine = Engine(Settings(bundle=tiny_bundle, engine={"reload_interval_s": 0}), Metrics())

    async def main() -> tuple[str | None, str]:
        await engine.start()
        try:
            answer = await engine.answer(Users("", 3, 1))
            return answer.bundle_id, engine.bundles.recommender().bundle_id
        finally:
            await engine.close()

    named, serving = asyncio.run(main())
    assert named == serving
