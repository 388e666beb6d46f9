"""The messages between the HTTP fronts and the engine: the public request types of
``service.api`` with what HTTP carries outside the body, and the engine's answer.

A front sends one ``Call`` per request (``Recommend``, ``Similar``, ``Status``, ``Reload``,
``Events``, ``Users`` or ``Cancel``), each with the front's own request number; the engine
answers each with an ``Answer`` carrying that number: a result, or a typed ``Failure`` that
the front turns into HTTP (``service.front.errors``). On the wire (``service.transport``)
they are msgpack; in inline mode they are passed as they are.

A result crosses as the JSON its public type (``service.api``) encodes to, written once by
the engine: a front forwards it unread (measured against decoding and re-encoding it in the
front: docs/benchmarks.md, "One definition of the API").
"""

from __future__ import annotations

import msgspec

from service.api import (
    EventsRequest,
    ExperimentRequest,
    Failure,
    ItemId,
    RecommendRequest,
    SimilarRequest,
)


class Recommend(RecommendRequest, tag=True, frozen=True, kw_only=True):
    """``POST /v1/recommend``: its body, the user the front resolved (the body's, or the
    gateway's header)."""

    id: int = 0


class Similar(SimilarRequest, tag=True, frozen=True, kw_only=True):
    """``GET`` or ``POST /v1/items/{item_id}/similar``: the path's item and the rules."""

    item_id: ItemId
    id: int = 0


class Events(EventsRequest, tag=True, frozen=True, kw_only=True):
    """``POST /v1/events``: stored in Redis by the engine (``service.engine.events``)."""

    id: int = 0


class Status(msgspec.Struct, tag=True, frozen=True):
    """What ``/readyz`` says: asked of the engine at every call, so every front names the
    bundle the engine serves from the moment it swaps."""

    id: int = 0


class Reload(msgspec.Struct, tag=True, frozen=True):
    """``POST /admin/reload`` (authorised by the front): the engine reloads, once."""

    id: int = 0


class Users(msgspec.Struct, tag=True, frozen=True):
    """``GET /v1/users``: the bundle's user ids starting with ``prefix`` (the page's picker)."""

    prefix: str = ""
    limit: int = 20
    id: int = 0


class Experiment(ExperimentRequest, tag=True, frozen=True, kw_only=True):
    """``POST /admin/experiment`` (authorised by the front)."""

    id: int = 0


class Experiments(msgspec.Struct, tag=True, frozen=True):
    """``GET /v1/experiments`` (authorised by the front)."""

    id: int = 0


class Cancel(msgspec.Struct, tag=True, frozen=True):
    """The front gave up on call ``id`` (deadline, client gone): drop it if still queued."""

    id: int


Call = Recommend | Similar | Status | Reload | Events | Users | Experiment | Experiments | Cancel


class Answer(msgspec.Struct, frozen=True):
    """The engine's answer to call ``id``: ``body``, the result's JSON, or ``failure``.
    ``bundle_id`` is for the front's access log."""

    id: int
    body: bytes = b""
    failure: Failure | None = None
    bundle_id: str | None = None


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


def failed(call_id: int, failure: Failure) -> Answer:
    return Answer(call_id, failure=failure)
