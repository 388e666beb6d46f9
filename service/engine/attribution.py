"""Every answer attributable: a recommendation id on each, and a compact record of it in Redis
that later events join by that id (AWS Personalize's ``recommendationId``, Google Retail's
``attributionToken``).

- The id is a UUIDv7 (RFC 9562): unique without coordination between engines, and sortable by
  time; its first 48 bits are the answer's Unix milliseconds, so the id alone says where its
  record is.
- Records live in one Redis hash per minute (``walrus:answers:<minute>``: field the id, value
  a msgpack ``AnswerRecord``), each expiring ``WALRUS_EVENTS__ATTRIBUTION_TTL_S`` after its
  minute. A Lua script adds a batch of records to its minute only while that minute holds
  fewer than its share of ``WALRUS_EVENTS__ATTRIBUTION_MAX_RECORDS``: the budget is global
  (every engine of every replica writes through the same script), and Redis never holds more
  than the budget plus one minute's share.
- Recording never waits on Redis: the engine queues each record and a background thread
  writes them in batches every 0.2 s, one round trip each (few and large: with
  ``appendfsync always`` each write is an fsync, which the answers' own event reads would
  wait behind). A lookup writes what is queued first, so an event never misses its answer.
  A record that cannot be kept (Redis down, the queue full, the minute over budget) is
  counted by why, never dropped silently.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

import msgspec
import redis

from service.engine.events import Breaker

log = logging.getLogger("walrus.service.attribution")
KEY_PREFIX = "walrus:answers:"
ONLINE_PREFIX = "walrus:online:"  # + bundle id + ":" + arm: a hash of counts (answers, types)
BUCKET_S = 60

# Adds ARGV[3..] (id, record pairs) to KEYS[1] while it holds fewer than ARGV[1] fields; sets
# its expiry to ARGV[2] seconds; returns how many were added.
_ADD = """
local room = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[1])
local added = 0
for i = 3, #ARGV, 2 do
  if added >= room then break end
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return added
"""


def recommendation_id(now_s: float | None = None) -> str:
    """A new UUIDv7: 48 bits of Unix milliseconds, the version, 74 random bits."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    return str(uuid.UUID(int=value | rand & (2**62 - 1)))


def issued_ms(rec_id: str) -> int | None:
    """The Unix milliseconds a recommendation id was issued at; None if it is no UUIDv7."""
    try:
        value = uuid.UUID(rec_id)
    except ValueError:
        return None
    return value.int >> 80 if value.version == 7 else None


def online_key(bundle_id: str, arm: str) -> str:
    return f"{ONLINE_PREFIX}{bundle_id}:{arm}"


def bucket_key(ms: int) -> str:
    return f"{KEY_PREFIX}{ms // (BUCKET_S * 1000)}"


class AnswerRecord(msgspec.Struct, array_like=True, frozen=True):
    """What an event needs of the answer it names: who got which items, from which bundle
    and arm, when."""

    user_id: str
    bundle_id: str
    arm: str
    issued_ms: int
    item_ids: list[str]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AnswerRecord).decode


class Attribution:
    """Answer records in Redis: ``record`` queues one (never blocks), ``lookup`` joins ids."""

    def __init__(
        self,
        client: redis.Redis,
        breaker: Breaker,
        ttl_s: int,
        max_records: int,
        count: Callable[[str, int], None],
        queue_size: int = 50_000,
        flush_s: float = 0.2,
    ) -> None:
        self.client, self.breaker, self.ttl_s = client, breaker, ttl_s
        # The budget, shared among the minutes a record lives.
        self.per_bucket = max(1, math.ceil(max_records / math.ceil(ttl_s / BUCKET_S)))
        self.count = count  # (outcome, n): stored, over_budget, lost
        self.queue: deque[tuple[str, AnswerRecord]] = deque()
        self.queue_size, self.flush_s = queue_size, flush_s
        self._add = client.register_script(_ADD)
        self._wake = threading.Event()
        self._flushing = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="walrus-attribution", daemon=True)
        self._thread.start()

    def status(self) -> str:
        """``ok``, or why answers are not recorded now (``/readyz``)."""
        return f"unavailable: {self.breaker.reason}" if self.breaker.open else "ok"

    def record(self, rec_id: str, record: AnswerRecord) -> None:
        if len(self.queue) >= self.queue_size:
            self.count("lost", 1)  # Redis cannot keep up: count it, never block an answer
            return
        self.queue.append((rec_id, record))

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is queued, one round trip per batch. Under a lock: a caller that
        flushes also waits for a batch the background thread has in flight."""
        with self._flushing:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), 512))]
                self._write(batch)

    def _write(self, batch: list[tuple[str, AnswerRecord]]) -> None:
        if not self.breaker.allow():
            self.count("lost", len(batch))
            return
        by_bucket: dict[str, list[bytes | str]] = {}
        for rec_id, record in batch:
            by_bucket.setdefault(bucket_key(record.issued_ms), []).extend((rec_id, _encode(record)))
        answers: dict[str, int] = {}
        for _, record in batch:
            key = online_key(record.bundle_id, record.arm)
            answers[key] = answers.get(key, 0) + 1
        expiry = self.ttl_s + BUCKET_S
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, pairs in by_bucket.items():
                    self._add(keys=[key], args=[self.per_bucket, expiry, *pairs], client=pipe)
                for key, n in answers.items():
                    pipe.hincrby(key, "answers", n)
                added = cast(list[int], pipe.execute())[: len(by_bucket)]
        except redis.RedisError as exc:
            self.breaker.failed(f"{type(exc).__name__}: {exc}".splitlines()[0])
            self.count("lost", len(batch))
            return
        self.breaker.succeeded()
        stored = sum(added)
        self.count("stored", stored)
        if stored < len(batch):
            self.count("over_budget", len(batch) - stored)

    def lookup(self, rec_ids: Iterable[str]) -> dict[str, AnswerRecord]:
        """The records still kept for these ids (expired, unknown and malformed ids left out).
        Raises ``redis.RedisError`` when Redis does not answer. Records still queued are
        written first: an event may come a millisecond after its answer."""
        self.flush()
        wanted = [(i, ms) for i in set(rec_ids) if (ms := issued_ms(i)) is not None]
        if not wanted:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for rec_id, ms in wanted:
                pipe.hget(bucket_key(ms), rec_id)
            replies = cast(list[bytes | None], pipe.execute())
        return {
            rec_id: _decode(raw)
            for (rec_id, _), raw in zip(wanted, replies, strict=True)
            if raw is not None
        }

    def count_events(self, counts: dict[tuple[str, str, str], int]) -> None:
        """Add attributed events to their answers' counts: ``(bundle_id, arm, type)`` to n.
        Raises ``redis.RedisError`` when Redis does not answer."""
        with self.client.pipeline(transaction=False) as pipe:
            for (bundle_id, arm, kind), n in counts.items():
                pipe.hincrby(online_key(bundle_id, arm), kind, n)
            pipe.execute()

    def online(self) -> dict[tuple[str, str], dict[str, int]]:
        """Every bundle and arm's counts: answers, and events by type."""
        out = {}
        for key in self.client.scan_iter(match=ONLINE_PREFIX + "*", count=100):
            bundle_id, _, arm = key.decode()[len(ONLINE_PREFIX) :].rpartition(":")
            counts = cast(dict[bytes, bytes], self.client.hgetall(key))
            out[bundle_id, arm] = {k.decode(): int(v) for k, v in counts.items()}
        return out

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=2)
        self.flush()
