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

import jsonschema
import msgspec
import pytest

from service.api import (
    Contribution,
    Diversity,
    Event,
    EventsAccepted,
    Explanation,
    Failure,
    Item,
    Readiness,
    Recommendations,
    RejectedEvent,
    Reloaded,
    SimilarItems,
    UserIds,
)
from service.front.client import UNAVAILABLE, EngineClient
from service.front.document import components
from service.messages import (
    Answer,
    Cancel,
    Events,
    Recommend,
    Reload,
    Similar,
    Status,
    Users,
    decode_answer,
    decode_call,
    encode,
    json_body,
)

CALLS = [
    Recommend(
        id=7,
        k=5,
        user_id="u1",
        query="space robots",
        history=["i1", "i2"],
        exclude=["i3"],
        exclude_seen=False,
    ),
    Recommend(id=8),
    Similar(item_id="i9", k=3, id=9),
    Recommend(
        id=13,
        offset=20,
        filter={"year": {"gte": 1990.0}, "genres": {"any": ["Drama"]}},
        diversity=Diversity("topic", 2, 0.3),
        explain=True,
    ),
    Similar(
        item_id="i9",
        k=3,
        id=14,
        offset=10,
        filter={"in_stock": {"eq": True}},
        diversity=Diversity(mmr=0.5),
    ),
    Status(10),
    Reload(11),
    Events(events=[Event("u1", "i1"), Event("u2", "i2", 2.5, 1_700_000_000.0)], id=15),
    Users("u1", 5, 16),
    Cancel(12),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: type(c).__name__)
def test_every_call_survives_the_wire(call):
    assert decode_call(encode(call)) == call


@pytest.mark.parametrize(
    "answer",
    [
        Answer(3, b'{"ready":true}', bundle_id="b1"),
        Answer(4, failure=Failure("unavailable", "restarting", retry_after=1)),
        Answer(5, failure=Failure("invalid", "k: at most 100", "k")),
    ],
)
def test_an_answer_survives_the_wire_with_its_body_untouched(answer):
    assert decode_answer(encode(answer)) == answer


@pytest.mark.parametrize("data", [b"", b"\x93\x01\x02\x03", encode(Answer(1, b"{}"))])
def test_garbage_is_refused_as_a_call(data):
    with pytest.raises(msgspec.DecodeError):
        decode_call(data)


def test_a_frame_is_checked_as_the_body_is():
    """The engine decodes frames into the same types as the front decodes bodies, so a
    frame no body could produce (a diversity cap without its field) is refused too."""
    bad = encode(Recommend(id=1)).replace(b"diversity\xc0", b"diversity\x81\xadmax_per_value\x02")
    assert bad != encode(Recommend(id=1))
    with pytest.raises(msgspec.ValidationError, match="field and max_per_value"):
        decode_call(bad)


REC_ID = "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"
ITEM = Item("i1", "A title", 0.5, ["wals", "text"])
EXPLAINED = Item(
    "i2",
    "Another",
    0.25,
    ["wals"],
    Explanation(0.25, ["wals"], 1.5, None, [Contribution("i7", "Seen", 0.9, 0.6)]),
)
RESULTS = [
    Recommendations([ITEM, EXPLAINED], True, "b1", REC_ID, "control", {"encode": 1.0}, []),
    SimilarItems("i1", "wals", [ITEM], "b1", REC_ID, "candidate", {"ann": 0.1}),
    Readiness(ready=True, bundle_id="b1", onnx_providers=["CPU"], faiss="cpu"),
    Readiness(ready=False, reason="loading", refused={"/b": "bad"}),
    Reloaded("b1", True),
    Readiness(ready=True, bundle_id="b1", events="unavailable: x", degraded=["events: x"]),
    EventsAccepted(2, 1, [RejectedEvent(1, "unknown item_id 'x'")]),
    UserIds(["u1", "u10"], 60),
    Readiness(ready=True, counts={"users": 2, "items": 3}, attributes={"year": "numeric"}),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda b: type(b).__name__)
def test_the_engine_s_json_is_what_the_openapi_document_promises(result):
    """The JSON the engine writes validates against the component the document generates
    from the same type, and reads back equal."""
    schemas = components()
    schema = {**schemas[type(result).__name__], "components": {"schemas": schemas}}
    text = json_body(result)
    jsonschema.validate(msgspec.json.decode(text), schema)
    assert msgspec.json.decode(text, type=type(result)) == result


def test_the_schema_check_can_fail():
    schemas = components()
    schema = {**schemas["UserIds"], "components": {"schemas": schemas}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"user_ids": ["u1"], "users": "60"}, schema)


def start_engine(bundle: Path, address: str, **settings: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WALRUS_BUNDLE": str(bundle),
        "WALRUS_ENGINE__ADDRESS": address,
        **settings,
    }
    return subprocess.Popen([sys.executable, "-m", "service.engine"], env=env)


async def until_ready(client: EngineClient, timeout: float = 90.0) -> Answer:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await client.submit(Status(client.next_id()))
        if answer.failure is None and msgspec.json.decode(answer.body, type=Readiness).ready:
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
        assert gone.failure == Failure("unavailable", UNAVAILABLE, retry_after=1)
        # Every batch waits 0.9 s for company: a call is surely waiting when the engine dies.
        engine = start_engine(tiny_bundle, address, WALRUS_ENGINE__BATCH_WAIT_US="900000")
        try:
            ready = msgspec.json.decode((await until_ready(client)).body, type=Readiness)
            call = Recommend(id=client.next_id(), k=3, query="space robots")
            answer = await client.submit(call)
            got = msgspec.json.decode(answer.body, type=Recommendations)
            assert answer.failure is None and len(got.items) == 3
            assert got.bundle_id == ready.bundle_id == answer.bundle_id
            times = []
            for _ in range(200):
                start = time.perf_counter()
                await client.submit(Status(client.next_id()))
                times.append(time.perf_counter() - start)
            assert sorted(times)[100] < 0.05  # a round trip, not a poll interval
            # Killed while a call waits for its batch: the call is answered 503 at once.
            pending = client.submit(Recommend(id=client.next_id(), k=3, query="killed"))
            await asyncio.sleep(0.2)
            engine.send_signal(signal.SIGKILL)
            start = time.perf_counter()
            lost = await asyncio.wait_for(pending, 5)
            assert lost.failure is not None and lost.failure.kind == "unavailable"
            assert time.perf_counter() - start < 0.5
            await asyncio.sleep(0.3)
            after = await client.submit(Status(client.next_id()))
            assert after.failure == Failure("unavailable", UNAVAILABLE, retry_after=1)
        finally:
            engine.kill()
            engine.wait()
            await client.close()

    asyncio.run(scenario())
