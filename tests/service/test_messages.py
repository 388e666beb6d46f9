"""The messages between fronts and the engine, and the transport that carries them: every
call survives the wire, every body the engine writes is what the OpenAPI document promises,
and a real engine process answers a real client, which hears at once when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from service import schemas
from service.front.client import UNAVAILABLE, EngineClient
from service.messages import (
    Answer,
    Cancel,
    Contribution,
    Diversity,
    Event,
    Events,
    EventsAccepted,
    Explanation,
    Item,
    Readiness,
    Recommend,
    Recommendations,
    RejectedEvent,
    Reload,
    Reloaded,
    Similar,
    SimilarItems,
    Status,
    UserIds,
    Users,
    decode_answer,
    decode_call,
    encode,
    json_body,
)

CALLS = [
    Recommend(7, 5, "u1", "space robots", ["i1", "i2"], ["i3"], False),
    Recommend(8),
    Similar("i9", 3, 9),
    Recommend(
        13,
        offset=20,
        filter={"year": {"gte": 1990.0}, "genres": {"any": ["Drama"]}},
        diversity=Diversity("topic", 2, 0.3),
        explain=True,
    ),
    Similar("i9", 3, 14, 10, {"in_stock": {"eq": True}}, Diversity(mmr=0.5)),
    Status(10),
    Reload(11),
    Events([Event("u1", "i1"), Event("u2", "i2", 2.5, 1_700_000_000.0)], 15),
    Users("u1", 5, 16),
    Cancel(12),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: type(c).__name__)
def test_every_call_survives_the_wire(call):
    assert decode_call(encode(call)) == call


def test_an_answer_survives_the_wire_with_its_body_untouched():
    answer = Answer(3, 503, b'{"detail":"x"}', "b1", 1)
    assert decode_answer(encode(answer)) == answer


@pytest.mark.parametrize("data", [b"", b"\x93\x01\x02\x03", encode(Answer(1, 200, b"{}"))])
def test_garbage_is_refused_as_a_call(data):
    with pytest.raises(msgspec.DecodeError):
        decode_call(data)


ITEM = Item("i1", "A title", 0.5, ["wals", "text"])
EXPLAINED = Item(
    "i2",
    "Another",
    0.25,
    ["wals"],
    Explanation(0.25, ["wals"], 1.5, None, [Contribution("i7", "Seen", 0.9, 0.6)]),
)
BODIES = [
    (
        Recommendations([ITEM, EXPLAINED], True, "b1", {"encode": 1.0, "total": 2.5}, []),
        schemas.RecommendResponse,
    ),
    (SimilarItems("i1", "wals", [ITEM], "b1", {"ann": 0.1}), schemas.SimilarResponse),
    (Readiness(ready=True, bundle_id="b1", onnx_providers=["CPU"], faiss="cpu"), schemas.Readiness),
    (Readiness(ready=False, reason="loading", refused={"/b": "bad"}), schemas.Readiness),
    (Reloaded("b1", True), schemas.ReloadResponse),
    (
        Readiness(ready=True, bundle_id="b1", events="unavailable: x", degraded=["events: x"]),
        schemas.Readiness,
    ),
    (EventsAccepted(2, [RejectedEvent(1, "unknown item_id 'x'")]), schemas.EventsResponse),
    (UserIds(["u1", "u10"], 60), schemas.UsersResponse),
    (Readiness(ready=True, counts={"users": 2, "items": 3}), schemas.Readiness),
]


@pytest.mark.parametrize(("body", "model"), BODIES, ids=lambda b: type(b).__name__)
def test_the_engine_s_json_is_what_the_openapi_document_promises(body, model):
    """The pydantic models document the API; the engine writes msgspec structs. The same
    fields, names and types: validated strictly against the model, dumped back equal."""
    text = json_body(body)
    parsed = model.model_validate_json(text, strict=True)
    # exclude_unset: an item without an explanation leaves the field out (msgspec's
    # omit_defaults), and the model's default for it is that absence.
    assert msgspec.json.decode(text) == parsed.model_dump(mode="json", exclude_unset=True)
    assert set(model.model_fields) == set(type(body).__struct_fields__)


def start_engine(bundle: Path, address: str, **settings: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WALRUS_BUNDLE": str(bundle),
        "WALRUS_ENGINE_ADDRESS": address,
        **settings,
    }
    return subprocess.Popen([sys.executable, "-m", "service.engine"], env=env)


async def until_ready(client: EngineClient, timeout: float = 90.0) -> Answer:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await client.submit(Status(client.next_id()))
        if answer.status == 200:
            return answer
        await asyncio.sleep(0.1)
    raise TimeoutError("the engine never became ready")


@pytest.mark.slow
def test_a_real_engine_answers_and_its_death_is_heard_at_once(tiny_bundle, tmp_path):
    address = str(tmp_path / "engine.sock")

    async def scenario() -> None:
        client = EngineClient(address)
        await client.start()
        gone = await client.submit(Status(client.next_id()))  # nothing listens yet
        assert gone.status == 503 and gone.retry_after == 1 and UNAVAILABLE.encode() in gone.body
        # Every batch waits 0.9 s for company: a call is surely waiting when the engine dies.
        engine = start_engine(tiny_bundle, address, WALRUS_BATCH_WAIT_US="900000")
        try:
            ready = msgspec.json.decode((await until_ready(client)).body, type=Readiness)
            answer = await client.submit(Recommend(client.next_id(), 3, query="space robots"))
            got = msgspec.json.decode(answer.body, type=Recommendations)
            assert answer.status == 200 and len(got.items) == 3
            assert got.bundle_id == ready.bundle_id == answer.bundle_id
            times = []
            for _ in range(200):
                start = time.perf_counter()
                await client.submit(Status(client.next_id()))
                times.append(time.perf_counter() - start)
            assert sorted(times)[100] < 0.05  # a round trip, not a poll interval
            # Killed while a call waits for its batch: the call is answered 503 at once.
            pending = client.submit(Recommend(client.next_id(), 3, query="killed"))
            await asyncio.sleep(0.2)
            engine.send_signal(signal.SIGKILL)
            start = time.perf_counter()
            lost = await asyncio.wait_for(pending, 5)
            assert lost.status == 503 and lost.retry_after == 1
            assert time.perf_counter() - start < 0.5
            await asyncio.sleep(0.3)
            after = await client.submit(Status(client.next_id()))
            assert after.status == 503 and after.retry_after == 1
        finally:
            engine.kill()
            engine.wait()
            await client.close()

    asyncio.run(scenario())
