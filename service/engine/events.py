"""Users' recent events in Redis: written by ``POST /v1/events``, read at request time.

Every engine of every replica reads and writes the same Redis, so an event posted through
any front is in the next answer of any of them. One list per user (``walrus:events:<user>``),
newest first, capped at ``WALRUS_EVENTS__PER_USER`` and expiring ``WALRUS_EVENTS__TTL_S`` after
the user's last event; each batch is written in one pipeline (one round trip) inside
MULTI/EXEC, so a batch Redis acknowledged is in it whole. A request reads the users of its
batch in one pipeline too.

Redis is never allowed to fail a recommendation: every call has a short timeout
(``WALRUS_EVENTS__REDIS_TIMEOUT_MS``), and after ``Breaker.FAILURES`` failures in a row the breaker
opens: for ``WALRUS_EVENTS__REDIS_BREAKER_S`` no call is tried (answers come from the bundle alone,
with a warning) and then one call tests the water. ``watch`` pings while it is open, so the
breaker closes when Redis is back even with no traffic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import msgspec
import redis

from models.core.errors import WalrusError
from models.core.events import MAX_WEIGHT, event_weight
from service.api import Event, RejectedEvent

log = logging.getLogger("walrus.service.events")
KEY_PREFIX = "walrus:events:"


class EventsUnavailable(WalrusError):
    """Redis did not answer (down, slow, or the breaker is open); the message says why."""


@dataclass(frozen=True)
class StoredEvent:
    """One accepted event as Redis keeps it: ``[item_id, weight, timestamp, type,
    recommendation_id]`` in JSON (``type`` "" for an untyped event, ``recommendation_id`` ""
    for an organic one, that no answer led to; lists written before them have three
    entries). Retraining judges a candidate on organic events: the serving bundle caused
    the others."""

    user_id: str
    item_id: str
    weight: float
    timestamp: float
    type: str = ""
    recommendation_id: str = ""


class _Stored(msgspec.Struct, array_like=True, frozen=True):
    item_id: str
    weight: float
    timestamp: float
    type: str = ""
    recommendation_id: str = ""


class Breaker:
    """A circuit breaker: closed (calls go through), open (no call for ``cool_down_s``
    after ``failures`` failures in a row), then half-open: one call decides."""

    FAILURES = 3

    def __init__(self, cool_down_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cool_down_s = cool_down_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.reason = ""
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether a call may be tried now (one trial per cool-down while open)."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self.clock() - self.opened_at < self.cool_down_s:
                return False
            self.opened_at = self.clock()  # the trial: the others wait another cool-down
            return True

    def retry_after(self) -> int:
        """Whole seconds until the next trial (for ``Retry-After``)."""
        opened = self.opened_at
        left = self.cool_down_s if opened is None else self.cool_down_s - (self.clock() - opened)
        return max(1, int(left + 0.999))

    def succeeded(self) -> None:
        with self._lock:
            if self.opened_at is not None:
                log.warning("Redis answers again: events are used again")
            self.failures, self.opened_at, self.reason = 0, None, ""

    def failed(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self.reason = reason
            if self.failures >= self.FAILURES and self.opened_at is None:
                log.error("Redis failed %d times running (%s): breaker open", self.failures, reason)
                self.opened_at = self.clock()
            elif self.opened_at is not None:
                self.opened_at = self.clock()  # a failed trial: another cool-down


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


class EventStore:
    """The events of ``WALRUS_EVENTS__REDIS_URL``: ``append`` a batch, ``recent`` item ids
    per user."""

    def __init__(
        self, url: str, per_user: int, ttl_s: int, timeout_s: float, breaker_s: float
    ) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self.per_user, self.ttl_s = per_user, ttl_s
        self.breaker = Breaker(breaker_s)

    def status(self) -> str:
        """``ok``, or why events are not used now (``/readyz``)."""
        if self.breaker.open:
            return f"unavailable: {self.breaker.reason}"
        return "ok"

    def _call(self, work: Callable[[redis.client.Pipeline], None]) -> list[object]:
        if not self.breaker.allow():
            raise EventsUnavailable(f"Redis unavailable ({self.breaker.reason}); breaker open")
        try:
            with self.client.pipeline(transaction=True) as pipe:
                work(pipe)
                replies: list[object] = pipe.execute()
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.breaker.failed(reason)
            raise EventsUnavailable(f"Redis unavailable ({reason})") from None
        self.breaker.succeeded()
        return replies

    def append(self, events: list[StoredEvent]) -> None:
        """Write a batch: per user LPUSH (newest first), LTRIM to the cap, EXPIRE. Returns
        once Redis acknowledged the whole batch; ``EventsUnavailable`` otherwise."""
        by_user: dict[str, list[bytes]] = {}
        for e in sorted(events, key=lambda e: e.timestamp):
            stored = _Stored(e.item_id, e.weight, e.timestamp, e.type, e.recommendation_id)
            by_user.setdefault(e.user_id, []).append(_encode(stored))

        def work(pipe: redis.client.Pipeline) -> None:
            for user, values in by_user.items():
                key = KEY_PREFIX + user
                pipe.lpush(key, *values)
                pipe.ltrim(key, 0, self.per_user - 1)
                pipe.expire(key, self.ttl_s)

        self._call(work)

    def recent(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Each user's recent item ids, newest first (users without events left out); an
        exposure (weight 0: an impression) is no interaction and is left out."""
        users = sorted(set(user_ids))
        if not users:
            return {}

        def work(pipe: redis.client.Pipeline) -> None:
            for user in users:
                pipe.lrange(KEY_PREFIX + user, 0, self.per_user - 1)

        replies = cast(list[list[bytes]], self._call(work))
        recent = {
            user: [e.item_id for e in map(_decode, reply) if e.weight > 0]
            for user, reply in zip(users, replies, strict=True)
        }
        return {user: items for user, items in recent.items() if items}

    async def watch(self, interval_s: float = 1.0) -> None:
        """While the breaker is open, ping Redis at each trial time: it closes as soon as
        Redis answers, traffic or not."""
        while True:
            await asyncio.sleep(interval_s)
            if self.breaker.open and self.breaker.allow():
                await asyncio.to_thread(self._ping)

    def _ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.breaker.failed(f"{type(exc).__name__}: {exc}".splitlines()[0])
        else:
            self.breaker.succeeded()

    def close(self) -> None:
        self.client.close()


def all_events(client: redis.Redis, batch: int = 500) -> Iterator[StoredEvent]:
    """Every stored event (``walrus data events``): SCAN over the users' lists, oldest
    first per user."""
    for key in client.scan_iter(match=KEY_PREFIX + "*", count=batch):
        user = key.decode()[len(KEY_PREFIX) :]
        for raw in reversed(client.lrange(key, 0, -1)):
            e = _decode(raw)
            yield StoredEvent(user, e.item_id, e.weight, e.timestamp, e.type, e.recommendation_id)


FUTURE_S = 86_400.0  # clocks disagree; a day ahead is a bug, not skew


def accept_events(
    events: list[Event], offered: Callable[[str], bool], types: dict[str, float], now: float
) -> tuple[list[StoredEvent], list[RejectedEvent]]:
    """The events to store, and each other one's index and why: an item the bundle does not
    offer (never had, or withdrew), a type ``types`` does not declare, a weight outside
    [0, MAX_WEIGHT], a timestamp before 1970 or over a day ahead. A missing weight is the
    type's (``models.core.events.event_weight``); a missing timestamp, ``now``. Unknown users
    are welcome."""
    accepted, rejected = [], []
    for index, event in enumerate(events):
        reason = _refusal(event, offered, types, now)
        if reason is None:
            weight = event_weight(event.type, event.weight, types)
            timestamp = now if event.timestamp is None else event.timestamp
            kind, rec = event.type or "", event.recommendation_id or ""
            accepted.append(StoredEvent(event.user_id, event.item_id, weight, timestamp, kind, rec))
        else:
            rejected.append(RejectedEvent(index, reason))
    return accepted, rejected


def _refusal(
    event: Event, offered: Callable[[str], bool], types: dict[str, float], now: float
) -> str | None:
    timestamp = now if event.timestamp is None else event.timestamp
    if not offered(event.item_id):
        return f"unknown item_id {event.item_id!r}"
    if event.type is not None and event.type not in types:
        return f"unknown type {event.type!r}: the bundle takes {', '.join(sorted(types))}"
    if event.weight is not None and not (
        math.isfinite(event.weight) and 0 <= event.weight <= MAX_WEIGHT
    ):
        return f"weight must be >= 0 and <= {MAX_WEIGHT:g}, got {event.weight!r}"
    if not (math.isfinite(timestamp) and 0 <= timestamp <= now + FUTURE_S):
        return f"timestamp must be Unix seconds, not in the future, got {timestamp!r}"
    return None
