"""The messages between the HTTP fronts and the engine: one typed definition both sides import.

A front sends one ``Call`` per request (``Recommend``, ``Similar``, ``Status``, ``Reload``,
``Events``, ``Users`` or ``Cancel``), each with the front's own request number; the engine
answers each with an ``Answer`` carrying that number. On the wire (``service.transport``)
they are msgpack (``encode`` / ``decode_*``); in inline mode they are passed as they are.
What the client reads, ``Answer.body``, is the final JSON, serialised once by the engine: a
front forwards it unread.

msgspec only (no pydantic): decoding a message is a few microseconds, and its fields are
typed and checked as it is decoded.
"""

from __future__ import annotations

from typing import Any

import msgspec

Filter = dict[str, dict[str, Any]]
"""``{field: {operator: value}}``: shape checked by the front, fields by the engine."""


class Diversity(msgspec.Struct, frozen=True):
    """At most ``max_per_value`` items per value of ``field``; and/or MMR with ``mmr``."""

    field: str | None = None
    max_per_value: int = 0
    mmr: float = 0.0


class Recommend(msgspec.Struct, tag=True, frozen=True):
    """``POST /v1/recommend``, as validated by the front."""

    id: int = 0
    k: int = 10
    user_id: str | None = None
    query: str | None = None
    history: list[str] | None = None
    exclude: list[str] | None = None
    exclude_seen: bool = True
    offset: int = 0
    filter: Filter | None = None
    diversity: Diversity | None = None
    explain: bool = False


class Similar(msgspec.Struct, tag=True, frozen=True):
    """``GET`` or ``POST /v1/items/{item_id}/similar``."""

    item_id: str
    k: int = 10
    id: int = 0
    offset: int = 0
    filter: Filter | None = None
    diversity: Diversity | None = None


class Status(msgspec.Struct, tag=True, frozen=True):
    """What ``/readyz`` says: asked of the engine at every call, so every front names the
    bundle the engine serves from the moment it swaps."""

    id: int = 0


class Reload(msgspec.Struct, tag=True, frozen=True):
    """``POST /admin/reload`` (authorised by the front): the engine reloads, once."""

    id: int = 0


class Event(msgspec.Struct, frozen=True):
    """One interaction, as the front validated its shape; the engine checks the rest."""

    user_id: str
    item_id: str
    weight: float | None = None
    timestamp: float | None = None


class Events(msgspec.Struct, tag=True, frozen=True):
    """``POST /v1/events``: stored in Redis by the engine (``service.engine.events``)."""

    events: list[Event]
    id: int = 0


class Users(msgspec.Struct, tag=True, frozen=True):
    """``GET /v1/users``: the bundle's user ids starting with ``prefix`` (the page's picker)."""

    prefix: str = ""
    limit: int = 20
    id: int = 0


class Cancel(msgspec.Struct, tag=True, frozen=True):
    """The front gave up on call ``id`` (deadline, client gone): drop it if still queued."""

    id: int


Call = Recommend | Similar | Status | Reload | Events | Users | Cancel


class Answer(msgspec.Struct, frozen=True):
    """The engine's answer to call ``id``: an HTTP status and the JSON body to send as is.
    ``retry_after`` (seconds) goes with 503s; ``bundle_id`` is for the front's access log."""

    id: int
    status: int
    body: bytes
    bundle_id: str | None = None
    retry_after: int | None = None


# ---------------------------------------------------------------- response bodies
# The JSON the engine writes for the client. tests/service/test_messages.py checks each
# against the pydantic response model of service.schemas that documents it in OpenAPI.


class Contribution(msgspec.Struct, frozen=True):
    item_id: str
    title: str
    score: float
    share: float


class Explanation(msgspec.Struct, frozen=True):
    head_score: float
    sources: list[str]
    wals_score: float | None
    text_score: float | None
    because: list[Contribution]
    other_terms: float | None = None
    rest: float | None = None


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    item_id: str
    title: str
    score: float
    sources: list[str]
    explanation: Explanation | None = None


class Recommendations(msgspec.Struct, frozen=True):
    items: list[Item]
    user_known: bool
    bundle_id: str
    timings_ms: dict[str, float]
    warnings: list[str]


class SimilarItems(msgspec.Struct, frozen=True):
    item_id: str
    source: str
    items: list[Item]
    bundle_id: str
    timings_ms: dict[str, float]
    warnings: list[str] = msgspec.field(default_factory=list)


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    reason: str | None = None
    draining: bool = False
    bundle_id: str | None = None
    onnx_providers: list[str] = msgspec.field(default_factory=list)
    faiss: str | None = None
    encoder_precision: str | None = None
    refused: dict[str, str] = msgspec.field(default_factory=dict)
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    events: str = "off"
    degraded: list[str] = msgspec.field(default_factory=list)
    counts: dict[str, int] = msgspec.field(default_factory=dict)


class RejectedEvent(msgspec.Struct, frozen=True):
    index: int
    reason: str


class EventsAccepted(msgspec.Struct, frozen=True):
    accepted: int
    rejected: list[RejectedEvent]


class UserIds(msgspec.Struct, frozen=True):
    user_ids: list[str]
    users: int


class Reloaded(msgspec.Struct, frozen=True):
    bundle_id: str | None
    reloaded: bool
    reason: str | None = None


_call = msgspec.msgpack.Decoder(Call)
_answer = msgspec.msgpack.Decoder(Answer)
_msgpack = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()


def encode(message: Call | Answer) -> bytes:
    return _msgpack.encode(message)


def decode_call(data: bytes) -> Call:
    return _call.decode(data)


def decode_answer(data: bytes) -> Answer:
    return _answer.decode(data)


def json_body(value: object) -> bytes:
    return _json.encode(value)


def error(call_id: int, status: int, detail: object, retry_after: int | None = None) -> Answer:
    """An answer with FastAPI's error shape, ``{"detail": ...}``."""
    return Answer(call_id, status, json_body({"detail": detail}), retry_after=retry_after)
