"""Answer records for attribution: UUIDv7 ids, a real Redis, the global budget, and what
happens when Redis is gone (counted, never silent)."""

from __future__ import annotations

import time
import uuid

import pytest

from service.engine.attribution import (
    BUCKET_S,
    AnswerRecord,
    Attribution,
    bucket_key,
    issued_ms,
    recommendation_id,
)
from service.engine.events import Breaker
from tests.support.redis import redis_or_skip
from tests.support.servers import eventually


def test_ids_are_uuid7_unique_and_sortable_by_time():
    ids = [recommendation_id(1_700_000_000.0 + t / 1000) for t in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)  # one a millisecond apart: the text order is the time order
    assert [issued_ms(i) for i in ids[:3]] == [
        1_700_000_000_000,
        1_700_000_000_001,
        1_700_000_000_002,
    ]
    assert issued_ms("not-a-uuid") is None and issued_ms(str(uuid.uuid4())) is None


@pytest.fixture
def redis_server(tmp_path):
    with redis_or_skip(tmp_path).start() as server:
        yield server


class Counts(dict):
    def __call__(self, outcome: str, n: int) -> None:
        self[outcome] = self.get(outcome, 0) + n


def attribution(url: str, counts: Counts, max_records: int = 1000, ttl_s: int = 600):
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
    return Attribution(client, Breaker(0.5), ttl_s, max_records, counts, flush_s=0.005)


def record(ms: int, items: list[str], arm: str = "control") -> AnswerRecord:
    return AnswerRecord("u1", "b1", arm, ms, items)


def test_records_are_found_by_id_and_answers_counted_per_bundle_and_arm(redis_server):
    counts = Counts()
    store = attribution(redis_server.url, counts)
    now = time.time()
    ids = [recommendation_id(now) for _ in range(5)]
    for i, rec_id in enumerate(ids):
        store.record(rec_id, record(issued_ms(rec_id), [f"i{i}"], "control" if i else "candidate"))
    eventually(lambda: counts.get("stored") == 5)
    found = store.lookup([*ids, recommendation_id(now), "junk"])
    assert set(found) == set(ids)  # an id never recorded, and a malformed one: absent
    assert found[ids[2]].item_ids == ["i2"] and found[ids[0]].arm == "candidate"
    assert store.online() == {
        ("b1", "control"): {"answers": 4},
        ("b1", "candidate"): {"answers": 1},
    }
    store.count_events({("b1", "control", "click"): 2})
    assert store.online()[("b1", "control")] == {"answers": 4, "click": 2}
    ttl = store.client.ttl(bucket_key(issued_ms(ids[0])))
    assert 600 < ttl <= 600 + BUCKET_S  # the minute expires with its last record
    store.close()


def test_the_budget_is_global_and_what_passes_it_is_counted(redis_server):
    """Two engines (two clients) share one budget: each minute holds at most its share."""
    counts = Counts()
    first = attribution(redis_server.url, counts, max_records=1000, ttl_s=600)  # 100 a minute
    second = attribution(redis_server.url, counts, max_records=1000, ttl_s=600)
    ms = int(time.time() * 1000)
    for _ in range(80):
        first.record(recommendation_id(ms / 1000), record(ms, ["i"]))
        second.record(recommendation_id(ms / 1000), record(ms, ["i"]))
    eventually(lambda: counts.get("stored", 0) + counts.get("over_budget", 0) == 160)
    assert counts == {"stored": 100, "over_budget": 60}
    assert first.client.hlen(bucket_key(ms)) == 100
    first.close()
    second.close()


def test_with_redis_down_records_are_counted_lost_and_lookups_raise(redis_server):
    import redis

    counts = Counts()
    store = attribution(redis_server.url, counts)
    redis_server.stop()
    for n in range(1, 5):  # one write each: three failed writes open the breaker
        store.record(recommendation_id(), record(int(time.time() * 1000), ["i"]))
        eventually(lambda n=n: counts.get("lost") == n)
    assert store.status().startswith("unavailable") and "stored" not in counts
    with pytest.raises(redis.RedisError):
        store.lookup([recommendation_id()])
    store.close()


def test_a_full_queue_counts_the_record_lost_instead_of_blocking(redis_server):
    counts = Counts()
    store = attribution(redis_server.url, counts)
    store.queue_size = 0
    store.record(recommendation_id(), record(int(time.time() * 1000), ["i"]))
    assert counts == {"lost": 1}
    store.close()


def test_a_lookup_right_after_the_answer_finds_its_record(redis_server):
    """An event may arrive before the background thread's next write: the lookup writes
    what is queued first."""
    counts = Counts()
    store = attribution(redis_server.url, counts)
    store.flush_s = 3600.0  # the thread would not write for an hour
    time.sleep(0.05)  # it is asleep now
    rec_id = recommendation_id()
    store.record(rec_id, record(issued_ms(rec_id), ["i9"]))
    assert store.lookup([rec_id])[rec_id].item_ids == ["i9"]
    store.close()
