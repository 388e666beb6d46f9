"""The public API, defined once: every request and response body, the limits on them, and the
typed failures, as msgspec structs.

The same types are the HTTP bodies, the messages on the socket between fronts and engine
(``service.messages`` extends the request bodies with what HTTP carries outside the body)
and the source of the OpenAPI document (``document``). Chosen by measurement over pydantic
models (docs/benchmarks.md, "One definition of the API"; ``python -m bench.api``).

Two kinds of limit:

- the format's own, in the types (an id is at most ``ID_CHARS`` characters);
- the deployment's, from ``Settings`` (``LIMITS``: k, offset, query, history, exclude, events),
  enforced by ``check`` on the front and again in the engine, and written into the document
  by ``document``: what the document allows is what the service accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

from models.core.errors import WalrusError
from models.core.operators import ITEM_ID, OPERATORS, Kind
from service.settings import Settings, variable

Source = Literal["wals", "text", "popular"]
FailureKind = Literal[
    "invalid", "not_found", "conflict", "unavailable", "disabled", "timeout", "internal"
]
ID_CHARS = 256
LIST_ITEMS = 10_000
FILTER_FIELDS = 64
ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_CHARS)]
Ids = Annotated[list[ItemId], msgspec.Meta(max_length=LIST_ITEMS)]
Filter = Annotated[
    dict[ItemId, dict[str, Any]],
    msgspec.Meta(
        max_length=FILTER_FIELDS,
        description="Only items passing every field's condition, {field: {operator: value}}; "
        "exactly k come back whenever at least k items pass. The operators by the field's "
        "kind (the bundle's fields are listed in /readyz and in this document): categorical "
        "and boolean eq, ne, in, not_in; tags any, all, none; numeric gt, gte, lt, lte; "
        "item_id in (an allow list) or not_in (a deny list). Several operators on one field "
        "are ANDed.",
    ),
]
Count = Annotated[int, msgspec.Meta(ge=1)]
Place = Annotated[int, msgspec.Meta(ge=0)]
T = TypeVar("T")


# ---------------------------------------------------------------- failures
class ApiError(WalrusError):
    """A request the service answers with a failure, not a result; the front turns each kind
    into its HTTP status in one place (``service.front.errors``)."""

    kind: ClassVar[FailureKind] = "internal"

    def __init__(self, message: str, field: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.field, self.retry_after = field, retry_after

    def failure(self) -> Failure:
        return Failure(self.kind, str(self), self.field, self.retry_after)


class InvalidInput(ApiError):
    """A value the service cannot use; ``field`` names it (``filter.year.gte``)."""

    kind = "invalid"


class NotFound(ApiError):
    """The thing asked about does not exist (an unknown item)."""

    kind = "not_found"


class Conflict(ApiError):
    """Not in this state: ramping, promoting or stopping with no experiment running."""

    kind = "conflict"


class Unavailable(ApiError):
    """Not now: loading, draining, overloaded, a dependency down; ``retry_after`` seconds."""

    kind = "unavailable"


class Disabled(ApiError):
    """The deployment has this turned off (events without Redis)."""

    kind = "disabled"


class Failure(msgspec.Struct, frozen=True):
    """Why a call has no result: what the engine answers instead of one."""

    kind: FailureKind
    message: str
    field: str | None = None
    retry_after: int | None = None


# ---------------------------------------------------------------- request bodies
def _is_text(value: object) -> bool:
    """Valid Unicode: JSON may carry lone UTF-16 surrogates ("\\ud800"), which no tokenizer,
    log or msgpack frame can encode."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_texts(fields: dict[str, object]) -> None:
    for name, value in fields.items():
        texts = value if isinstance(value, list) else [value]
        if not all(_is_text(t) for t in texts if isinstance(t, str)):
            raise ValueError(f"{name}: must be valid Unicode text (it holds a lone surrogate)")


def _item_ids(op: str, value: object) -> bool:
    """An ``item_id`` condition's value: a non-empty list of ids, under ``in`` or ``not_in``
    (the core looks them up as the bundle's ids; anything else is no id at all)."""
    return (
        op in OPERATORS[ITEM_ID]
        and isinstance(value, list)
        and bool(value)
        and all(isinstance(v, str) and 0 < len(v) <= ID_CHARS for v in value)
    )


class Diversity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Spread the answer: at most ``max_per_value`` items sharing a value of ``field`` (a
    categorical or boolean attribute), and/or maximal marginal relevance over the text
    embeddings with weight ``mmr`` on dissimilarity to what is already placed."""

    field: ItemId | None = None
    max_per_value: Annotated[int, msgspec.Meta(ge=1, le=LIST_ITEMS)] | None = None
    mmr: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    # What __post_init__ checks, said in the document (``service.front.document``).
    json_schema: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {
                "required": ["field", "max_per_value"],
                "properties": {"field": {"type": "string"}, "max_per_value": {"type": "integer"}},
            },
            {
                "required": ["mmr"],
                "properties": {
                    "mmr": {"exclusiveMinimum": 0},
                    "field": {"type": "null"},
                    "max_per_value": {"type": "null"},
                },
            },
        ]
    }

    def __post_init__(self) -> None:
        if (self.field is None) != (self.max_per_value is None):
            raise ValueError("diversity: give field and max_per_value together")
        if self.field is None and self.mmr == 0:
            raise ValueError("diversity: give field and max_per_value, or mmr > 0")
        _check_texts({"diversity.field": self.field})


class Rules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What /v1/recommend and /v1/items/{item_id}/similar share: pages, filter, diversity."""

    offset: Annotated[
        Place,
        msgspec.Meta(
            description="Places skipped: offset 20 with k 10 is places 21-30 of the same ranking."
        ),
    ] = 0
    filter: Filter | None = None
    diversity: Diversity | None = None

    def _check_filter(self) -> None:
        for name, condition in (self.filter or {}).items():
            where = f"filter.{name}"
            if not condition:
                raise ValueError(f'{where}: give at least one operator, such as {{"eq": "x"}}')
            for op, value in condition.items():
                if value is None:
                    raise ValueError(f"{where}.{op}: give a value (null is not one)")
                if isinstance(value, list) and len(value) > LIST_ITEMS:
                    raise ValueError(f"{where}.{op}: at most {LIST_ITEMS} values")
                if name == ITEM_ID and not _item_ids(op, value):
                    ops = " or ".join(OPERATORS[ITEM_ID])
                    raise ValueError(f"{where}.{op}: give {ops}, a list of item ids")
                _check_texts({where: name, f"{where}.{op}": value})


class RecommendRequest(Rules, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to recommend for. Every field is optional; with none, the most popular items."""

    user_id: Annotated[ItemId, msgspec.Meta(description="A user of the bundle, or unknown.")] | (
        None
    ) = None
    assignment_key: (
        Annotated[
            ItemId,
            msgspec.Meta(
                description="Without a user_id: what assigns the request to an experiment "
                "arm (a session or device id), stable across calls; neither: control."
            ),
        ]
        | None
    ) = None
    query: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                pattern=r"[^ \t\n\r\f\v]",  # ASCII: regex engines agree on it
                description="Free text, not blank; encoded by the ONNX encoder.",
            ),
        ]
        | None
    ) = None
    history: (
        Annotated[
            Ids,
            msgspec.Meta(
                description="Item ids the user just interacted with: folded into the user vector."
            ),
        ]
        | None
    ) = None
    k: Annotated[Count, msgspec.Meta(description="How many items.")] = 10
    exclude: Annotated[Ids, msgspec.Meta(description="Item ids never to return.")] | None = None
    exclude_seen: Annotated[
        bool, msgspec.Meta(description="Drop the user's known and history items.")
    ] = True
    explain: Annotated[
        bool,
        msgspec.Meta(
            description="Add each item's explanation: head, WALS and text scores, sources, "
            "and the history items whose terms make up most of its WALS score."
        ),
    ] = False

    def __post_init__(self) -> None:
        _check_texts(
            {
                "user_id": self.user_id,
                "query": self.query,
                "history": self.history,
                "exclude": self.exclude,
            }
        )
        self._check_filter()


class SimilarRequest(Rules, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/items/{item_id}/similar``: the GET's k, with pages, filter and diversity."""

    k: Annotated[Count, msgspec.Meta(description="How many items.")] = 10

    def __post_init__(self) -> None:
        self._check_filter()


EventType = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="impression, click, purchase, or a type the bundle's config declares "
        "([events.types], listed in /readyz); it gives the event its weight. Absent: an "
        "interaction of weight 1 (or the given weight).",
    ),
]
RecommendationId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        description="The recommendation_id of the answer that showed the item: the event "
        "is attributed to that answer's bundle and arm (an unknown or expired id is accepted "
        "and counted as unattributed).",
    ),
]


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One interaction: ``user_id`` did something with ``item_id``."""

    user_id: Annotated[
        ItemId, msgspec.Meta(description="Any user: an unknown one becomes a new user.")
    ]
    item_id: Annotated[ItemId, msgspec.Meta(description="An item of the serving bundle.")]
    weight: (
        Annotated[
            float,
            msgspec.Meta(
                description="The interaction's strength, >= 0 and <= 1000; default: its "
                "type's weight. Kept for the next training run (`walrus data events`); an "
                "event of weight 0 (an impression) is counted online but neither folded in "
                "nor trained on."
            ),
        ]
        | None
    ) = None
    timestamp: (
        Annotated[float, msgspec.Meta(description="Unix seconds; default: when received.")] | None
    ) = None
    type: EventType | None = None
    recommendation_id: RecommendationId | None = None
    position: (
        Annotated[
            int,
            msgspec.Meta(ge=1, description="The item's place in that answer, from 1."),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        _check_texts({"user_id": self.user_id, "item_id": self.item_id})


class EventsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A batch of events, stored in Redis and folded into the users' next answers."""

    events: Annotated[list[Event], msgspec.Meta(min_length=1)]


# ---------------------------------------------------------------- response bodies
class Contribution(msgspec.Struct, frozen=True):
    item_id: Annotated[str, msgspec.Meta(description="A history item (the user's or the call's).")]
    title: str
    score: Annotated[float, msgspec.Meta(description="Its term of the WALS score.")]
    share: Annotated[float, msgspec.Meta(description="score / wals_score.")]


class Explanation(msgspec.Struct, frozen=True):
    head_score: float
    sources: list[Source]
    wals_score: Annotated[float | None, msgspec.Meta(description="u . v; null without a user.")]
    text_score: Annotated[float | None, msgspec.Meta(description="Query (or profile) . item text.")]
    because: Annotated[
        list[Contribution],
        msgspec.Meta(description="The largest terms of wals_score, one per history item."),
    ]
    other_terms: Annotated[
        float | None, msgspec.Meta(description="The history terms not listed in because.")
    ] = None
    rest: Annotated[
        float | None,
        msgspec.Meta(
            description="wals_score minus all history terms: 0 (to float precision) when the "
            "user vector was folded in from history; for a known user, what training's "
            "approximate (CG) solve left. wals_score = sum(because) + other_terms + rest."
        ),
    ] = None


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    item_id: str
    title: str
    score: float
    sources: list[Source]
    explanation: Annotated[
        Explanation | None, msgspec.Meta(description="With explain: true only.")
    ] = None


Timings = Annotated[
    dict[str, float],
    msgspec.Meta(
        description="Milliseconds per stage with WALRUS_ENGINE__DEBUG_TIMINGS on; else {}."
    ),
]
Warnings = Annotated[
    list[str], msgspec.Meta(description="Such as unknown ids, or how many items a filter passed.")
]


class Recommendations(msgspec.Struct, frozen=True):
    items: list[Item]
    user_known: Annotated[bool, msgspec.Meta(description="Whether user_id is in the bundle.")]
    bundle_id: str
    recommendation_id: Annotated[
        str,
        msgspec.Meta(
            description="This answer's id (a UUIDv7): send it with the events it leads to."
        ),
    ]
    arm: Annotated[
        str, msgspec.Meta(description="The experiment arm that answered: control without one.")
    ]
    timings_ms: Timings
    warnings: Warnings


class SimilarItems(msgspec.Struct, frozen=True):
    item_id: str
    source: Annotated[
        Literal["wals", "text"], msgspec.Meta(description="WALS factors, or text (cold items).")
    ]
    items: list[Item]
    bundle_id: str
    recommendation_id: Annotated[
        str,
        msgspec.Meta(
            description="This answer's id (a UUIDv7): send it with the events it leads to."
        ),
    ]
    arm: Annotated[
        str, msgspec.Meta(description="The experiment arm that answered: control without one.")
    ]
    timings_ms: Timings
    warnings: Warnings = msgspec.field(default_factory=list)


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    reason: str | None = None
    draining: Annotated[bool, msgspec.Meta(description="Shutting down: finishing in flight.")] = (
        False
    )
    bundle_id: str | None = None
    onnx_providers: list[str] = msgspec.field(default_factory=list)
    faiss: Literal["cpu", "gpu"] | None = None
    encoder_precision: str | None = None
    refused: Annotated[
        dict[str, str], msgspec.Meta(description="Bundles refused at load or reload, and why.")
    ] = msgspec.field(default_factory=dict)
    attributes: Annotated[
        dict[str, Kind],
        msgspec.Meta(description="The bundle's filterable fields and their kinds."),
    ] = msgspec.field(default_factory=dict)
    events: Annotated[
        str,
        msgspec.Meta(
            description="off (no WALRUS_EVENTS__REDIS_URL), ok, or why Redis is not used."
        ),
    ] = "off"
    attribution: Annotated[
        str,
        msgspec.Meta(
            description="Whether answers are recorded for attribution: off (no Redis), ok, "
            "or why not now (answers still carry their ids)."
        ),
    ] = "off"
    event_types: Annotated[
        dict[str, float], msgspec.Meta(description="The event types taken, and their weights.")
    ] = msgspec.field(default_factory=dict)
    degraded: Annotated[
        list[str],
        msgspec.Meta(description="What works less well now, though answers still come."),
    ] = msgspec.field(default_factory=list)
    counts: Annotated[
        dict[str, int], msgspec.Meta(description="The bundle's users and items (less withdrawn).")
    ] = msgspec.field(default_factory=dict)


class RejectedEvent(msgspec.Struct, frozen=True):
    index: Annotated[int, msgspec.Meta(description="Its place in the posted list, from 0.")]
    reason: str


class EventsAccepted(msgspec.Struct, frozen=True):
    accepted: Annotated[int, msgspec.Meta(description="Events stored (acknowledged by Redis).")]
    attributed: Annotated[
        int, msgspec.Meta(description="Accepted events joined to the answer they name.")
    ]
    rejected: Annotated[list[RejectedEvent], msgspec.Meta(description="The others, each with why.")]


class UserIds(msgspec.Struct, frozen=True):
    user_ids: Annotated[
        list[str], msgspec.Meta(description="Ids starting with the prefix, in byte order.")
    ]
    users: Annotated[int, msgspec.Meta(description="How many users the bundle has.")]


class Reloaded(msgspec.Struct, frozen=True):
    bundle_id: Annotated[str | None, msgspec.Meta(description="The bundle serving after it.")]
    reloaded: bool
    reason: Annotated[str | None, msgspec.Meta(description="Why nothing was swapped in.")] = None


ExperimentAction = Literal["start", "ramp", "promote", "stop"]


class ExperimentRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /admin/experiment``: start one (a candidate bundle, a share), ramp its share,
    promote the candidate to ``current``, or stop it."""

    action: Annotated[
        ExperimentAction,
        msgspec.Meta(description="start (needs candidate), ramp (needs share), promote, stop."),
    ] = "start"
    candidate: (
        Annotated[
            ItemId,
            msgspec.Meta(description="A bundle id in the bundles directory, not current's."),
        ]
        | None
    ) = None
    share: (
        Annotated[
            float,
            msgspec.Meta(
                gt=0,
                le=1,
                description="The candidate's share of users (0, 1]; start's default 0.1. A "
                "ramp keeps every user already on the candidate there.",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.action == "start" and self.candidate is None:
            raise ValueError("candidate: required to start an experiment")
        if self.action == "ramp" and self.share is None:
            raise ValueError("share: required to ramp an experiment")


class Interval(msgspec.Struct, frozen=True):
    value: float | None
    low: float | None
    high: float | None


class ArmReport(msgspec.Struct, frozen=True):
    """One arm's online counts (joined by recommendation id) and rates."""

    bundle_id: str | None
    answers: int
    events: Annotated[dict[str, int], msgspec.Meta(description="Attributed events by type.")]
    ctr: Annotated[
        Interval,
        msgspec.Meta(description="clicks / impressions, with its 95% (Wilson) interval."),
    ]


class ExperimentReport(msgspec.Struct, frozen=True):
    """``GET /v1/experiments`` and every ``POST /admin/experiment``: the experiment as the
    engine serves it, and each arm's online figures."""

    running: bool
    candidate: str | None
    share: float
    started_at: str | None
    stopped: Annotated[str | None, msgspec.Meta(description="Why it stopped, if it did.")]
    arms: dict[str, ArmReport]
    ctr_difference: Annotated[
        Interval,
        msgspec.Meta(description="candidate's CTR - control's, with its 95% interval."),
    ]
    attribution: Annotated[str, msgspec.Meta(description="As in /readyz: off, ok, or why not.")]


class ErrorDetail(msgspec.Struct, frozen=True):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx and 5xx: where and why (FastAPI's shape), never the input echoed."""

    detail: list[ErrorDetail] | str


BODIES: tuple[type, ...] = (
    RecommendRequest,
    SimilarRequest,
    EventsRequest,
    Recommendations,
    SimilarItems,
    Health,
    Readiness,
    EventsAccepted,
    UserIds,
    Reloaded,
    ExperimentRequest,
    ExperimentReport,
    ErrorBody,
)
"""Every public shape, in the OpenAPI document's components."""


# ---------------------------------------------------------------- the deployment's limits
@dataclass(frozen=True)
class Limit:
    """A request field the deployment limits: ``keyword`` is the JSON Schema keyword it sets
    (maximum: the value; maxLength: characters; maxItems: list entries)."""

    field: str
    keyword: Literal["maximum", "maxLength", "maxItems"]
    setting: tuple[str, str]  # (group, field) in Settings

    def of(self, settings: Settings) -> int:
        group, name = self.setting
        limit: int = getattr(getattr(settings, group), name)
        return limit

    def exceeded(self, value: object, limit: int) -> bool:
        if value is None:
            return False
        size = value if self.keyword == "maximum" else len(value)  # type: ignore[arg-type]
        return bool(size > limit)  # type: ignore[operator]

    def message(self, limit: int) -> str:
        what = {"maximum": "", "maxLength": " characters", "maxItems": " entries"}[self.keyword]
        return f"at most {limit}{what} ({variable(*self.setting)})"


LIMITS = (
    Limit("k", "maximum", ("limits", "k")),
    Limit("offset", "maximum", ("limits", "offset")),
    Limit("query", "maxLength", ("limits", "query_chars")),
    Limit("history", "maxItems", ("limits", "history")),
    Limit("exclude", "maxItems", ("limits", "exclude")),
    Limit("events", "maxItems", ("events", "max_batch")),
)


def check(request: msgspec.Struct, settings: Settings) -> None:
    """``InvalidInput`` naming the first field over the deployment's limits. The front checks
    each body; the engine checks each call again (it trusts no frame)."""
    for limit in LIMITS:
        value = getattr(request, limit.field, None)
        most = limit.of(settings)
        if limit.exceeded(value, most):
            raise InvalidInput(f"{limit.field}: {limit.message(most)}", limit.field)


# ---------------------------------------------------------------- decoding a body
def _json_number(text: str) -> float | int:
    """JSON Schema's integer: 5.0 is one (and decodes as 5), 5.5 is not."""
    value = float(text)
    return int(value) if value.is_integer() else value


_reader = json.JSONDecoder(parse_float=_json_number)  # made once: json.loads makes one a call
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_NAMED = re.compile(r"^([\w.]+): ")


def _location(error: msgspec.ValidationError) -> tuple[list[str | int], str]:
    """Where a msgspec validation error points, as FastAPI's ``loc`` after ``body``, and
    its message without the path."""
    found = _AT.match(str(error))
    message = found["msg"] if found else str(error)
    loc: list[str | int] = []
    for name, index in _STEP.findall(found["path"] or "" if found else ""):
        loc.append(name or (int(index) if index.isdigit() else index))
    if unknown := _UNKNOWN.search(message):
        loc.append(unknown[1])
    elif named := _NAMED.match(message):  # the types' own checks name their field first
        parts = named[1].split(".")
        loc.extend(parts[1:] if loc and parts[0] == loc[-1] else parts)
    return loc, message


def decode(body: bytes, kind: type[T]) -> T:
    """A request body as ``kind``, or ``InvalidInput`` naming where it is wrong; a body that
    is not JSON at all: ``InvalidInput`` on ``body``, or ``ValueError`` for bytes no JSON
    reader takes (not UTF-8, nested past the reader's depth)."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads does
        data = _reader.decode(text) if body else None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"body: not JSON ({exc.msg})", "body") from None
    if not isinstance(data, dict):
        raise InvalidInput("body: must be a JSON object", "body")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        loc, message = _location(exc)
        raise InvalidInput(message, ".".join(str(p) for p in loc) or "body") from None
