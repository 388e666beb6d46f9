"""Users' recent events: the circuit breaker on a fake clock, the checks of each event, and
the store against a real redis-server (cap, TTL, order, export, a stopped and a slow Redis)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import redis

from models.core.events import DEFAULT_EVENT_TYPES
from service.api import Event
from service.engine.events import (
    KEY_PREFIX,
    Breaker,
    EventStore,
    EventsUnavailable,
    StoredEvent,
    accept_events,
    all_events,
)
from tests.support.redis import RedisServer, redis_or_skip
from tests.support.servers import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_lets_one_trial_through():
    clock = Clock()
    breaker = Breaker(5.0, clock)
    for _ in range(Breaker.FAILURES - 1):
        breaker.failed("down")
        assert breaker.allow() and not breaker.open
    breaker.failed("down")
    assert breaker.open and not breaker.allow() and breaker.retry_after() == 5
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one
    breaker.failed("still down")  # a failed trial: another cool-down
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.open and breaker.allow() and breaker.failures == 0


def test_a_success_resets_the_count_of_failures():
    breaker = Breaker(5.0, Clock())
    for _ in range(5):
        breaker.failed("blip")
        breaker.succeeded()
    assert not breaker.open


def test_each_bad_event_is_rejected_with_its_index_and_why():
    events = [
        Event("u1", "i1"),
        Event("u1", "nope"),
        Event("u2", "i2", weight=0.0),  # an exposure: kept, counted, never folded in
        Event("u2", "i2", weight=-1.0),
        Event("u2", "i2", weight=math.inf),
        Event("u2", "i2", weight=1001.0),
        Event("u3", "i1", weight=2.5, timestamp=1_700_000_000.0),
        Event("u3", "i1", timestamp=2e9 + 2 * 86_400),
        Event("u3", "i1", timestamp=-1.0),
        Event("u3", "i1", type="like"),
    ]
    types = dict(DEFAULT_EVENT_TYPES)
    accepted, rejected = accept_events(events, {"i1", "i2"}.__contains__, types, now=2e9)
    assert accepted == [
        StoredEvent("u1", "i1", 1.0, 2e9),
        StoredEvent("u2", "i2", 0.0, 2e9),
        StoredEvent("u3", "i1", 2.5, 1_700_000_000.0),
    ]
    assert [r.index for r in rejected] == [1, 3, 4, 5, 7, 8, 9]
    assert "unknown item_id 'nope'" in rejected[0].reason
    assert all("weight" in r.reason for r in rejected[1:4])
    assert all("timestamp" in r.reason for r in rejected[4:6])
    assert "unknown type 'like': the bundle takes click, impression, purchase" in rejected[6].reason


def test_a_typed_event_weighs_what_its_type_declares_unless_it_says_otherwise():
    types = {"impression": 0.0, "click": 1.0, "purchase": 4.0, "like": 2.5}
    events = [
        Event("u", "i", type="purchase"),
        Event("u", "i", type="impression"),
        Event("u", "i", type="like"),
        Event("u", "i", type="purchase", weight=9.0),
    ]
    accepted, rejected = accept_events(events, {"i"}.__contains__, types, now=2e9)
    assert not rejected
    assert [(e.type, e.weight) for e in accepted] == [
        ("purchase", 4.0),
        ("impression", 0.0),
        ("like", 2.5),
        ("purchase", 9.0),
    ]


@pytest.fixture
def redis_server(tmp_path):
    with redis_or_skip(tmp_path).start() as server:
        yield server


def store(server: RedisServer, per_user: int = 3, ttl_s: int = 60) -> EventStore:
    return EventStore(server.url, per_user, ttl_s, timeout_s=0.2, breaker_s=0.5)


def test_recent_events_are_newest_first_capped_and_expire(redis_server):
    events = store(redis_server, per_user=3, ttl_s=30)
    events.append([StoredEvent("u1", f"i{t}", 1.0, float(t)) for t in (3, 1, 5, 2, 4)])
    events.append([StoredEvent("u2", "i9", 1.0, 1.0)])
    assert events.recent(["u1", "u2", "nobody", "u1"]) == {"u1": ["i5", "i4", "i3"], "u2": ["i9"]}
    ttl_ms = redis_server.client().pttl(KEY_PREFIX + "u1")
    assert 0 < ttl_ms <= 30_000
    short = store(redis_server, ttl_s=1)
    short.append([StoredEvent("u3", "i1", 1.0, 1.0)])
    deadline = time.monotonic() + 5
    while short.recent(["u3"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert short.recent(["u3"]) == {}


def test_all_events_exports_every_kept_event_oldest_first(redis_server):
    events = store(redis_server, per_user=10)
    kept = [StoredEvent("u1", "i1", 2.0, 10.0), StoredEvent("u1", "i2", 1.0, 11.0)]
    kept += [StoredEvent(f"user {n}", "i3", 1.0, 12.0) for n in range(700)]
    events.append(kept)
    exported = list(all_events(redis_server.client(), batch=100))
    assert sorted(exported, key=lambda e: (e.user_id, e.timestamp)) == sorted(
        kept, key=lambda e: (e.user_id, e.timestamp)
    )


def test_a_stopped_redis_opens_the_breaker_and_keeps_what_it_acknowledged(redis_server):
    events = store(redis_server)
    events.append([StoredEvent("u1", "i1", 1.0, 1.0)])
    redis_server.stop()
    for _ in range(Breaker.FAILURES):
        with pytest.raises(EventsUnavailable, match="Redis unavailable"):
            events.recent(["u1"])
    assert events.breaker.open and events.status().startswith("unavailable")
    start = time.perf_counter()
    with pytest.raises(EventsUnavailable, match="breaker open"):
        events.append([StoredEvent("u1", "i2", 1.0, 2.0)])
    assert time.perf_counter() - start < 0.01  # open: not even tried
    redis_server.start()
    time.sleep(0.5)  # the breaker's cool-down (0.5 s): the next call is the trial
    assert events.recent(["u1"]) == {"u1": ["i1"]}
    assert not events.breaker.open and events.status() == "ok"


def test_a_slow_redis_costs_a_call_its_timeout_not_more(redis_server):
    events = store(redis_server)  # 200 ms timeout
    sleeper = threading.Thread(
        target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "1.5")
    )
    sleeper.start()
    eventually(lambda: not answers_within(redis_server, 0.05), 5, "DEBUG SLEEP blocks Redis")
    start = time.perf_counter()
    with pytest.raises(EventsUnavailable, match="Timeout"):
        events.recent(["u1"])
    assert time.perf_counter() - start < 1.0
    sleeper.join()


def answers_within(server: RedisServer, timeout_s: float) -> bool:
    try:
        return bool(redis.Redis.from_url(server.url, socket_timeout=timeout_s).ping())
    except redis.RedisError:
        return False
