"""Request and response bodies. Strict types: a wrong-typed field is a 422, not a coercion."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

Source = Literal["wals", "text", "popular"]
# Hard limits, visible in the OpenAPI document; WALRUS_MAX_K, _MAX_QUERY_CHARS, _MAX_HISTORY
# and _MAX_EXCLUDE may lower them further (422 naming the field either way).
ID_CHARS = 256
QUERY_CHARS = 4096
LIST_ITEMS = 10_000
ItemId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=ID_CHARS)]


def _json_integer(value: object) -> object:
    """A JSON integer: 5 or 5.0 (JSON Schema's integer), never "5" or true."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number without a fraction")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Scalar = StrictStr | StrictBool
FILTER_FIELDS = 64


class Condition(BaseModel):
    """One field's condition; operators by the field's kind (the bundle's attributes are
    listed in /openapi.json and /readyz): categorical and boolean ``eq``, ``ne``, ``in``,
    ``not_in``; tags ``any``, ``all``, ``none``; numeric ``gt``, ``gte``, ``lt``, ``lte``;
    ``item_id`` ``in`` (an allow list) or ``not_in`` (a deny list). Several operators on
    one field are ANDed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1, max_length=LIST_ITEMS)
    not_in: list[Scalar] | None = Field(None, min_length=1, max_length=LIST_ITEMS)
    any: list[StrictStr] | None = Field(None, min_length=1, max_length=LIST_ITEMS)
    all: list[StrictStr] | None = Field(None, min_length=1, max_length=LIST_ITEMS)
    none: list[StrictStr] | None = Field(None, min_length=1, max_length=LIST_ITEMS)
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null_values(cls, data: object) -> object:
        """``{"lt": null}`` is not "no bound": every operator given needs its value."""
        if isinstance(data, dict):
            nulls = [op for op, value in data.items() if value is None]
            if nulls:
                raise ValueError(f"{nulls[0]}: give a value (null is not one)")
        return data

    @model_validator(mode="after")
    def _one_operator_at_least(self) -> Condition:
        if not self.operators():
            raise ValueError('give at least one operator, such as {"eq": "x"}')
        return self

    def operators(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class CapDiversity(BaseModel):
    """At most ``max_per_value`` items sharing a value of ``field`` (a categorical or
    boolean attribute), optionally with MMR as well."""

    model_config = ConfigDict(extra="forbid")

    field: ItemId
    max_per_value: JsonInt = Field(ge=1, le=LIST_ITEMS)
    mmr: Number = Field(0.0, ge=0.0, le=1.0)


class MMRDiversity(BaseModel):
    """Maximal marginal relevance over the text embeddings: ``mmr`` is the weight on
    dissimilarity to what is already placed (0 would be the ranking as it is)."""

    model_config = ConfigDict(extra="forbid")

    mmr: Number = Field(gt=0.0, le=1.0)


class Rules(BaseModel):
    """What /v1/recommend and /v1/items/{item_id}/similar share: pages, filter, diversity."""

    offset: JsonInt = Field(
        0,
        ge=0,
        le=100_000,
        description="Places skipped: offset 20 with k 10 is places 21-30 of the same ranking "
        "(at most WALRUS_MAX_OFFSET).",
    )
    filter: dict[ItemId, Condition] | None = Field(
        None,
        max_length=FILTER_FIELDS,
        description="Only items passing every field's condition; exactly k come back "
        "whenever at least k items pass.",
    )
    diversity: CapDiversity | MMRDiversity | None = Field(
        None, description="Spread the answer: a cap per value of a field, and/or MMR."
    )

    @model_validator(mode="after")
    def _valid_unicode_rules(self) -> Rules:
        """As ``RecommendRequest._valid_unicode``, for every text of the filter and the
        diversity's field: a lone surrogate is refused here, naming where."""
        texts: list[tuple[str, object]] = [("diversity", getattr(self.diversity, "field", None))]
        for name, condition in (self.filter or {}).items():
            texts.append(("filter", name))
            texts += [(f"filter.{name}", v) for v in _strings(condition.operators())]
        for where, text in texts:
            if isinstance(text, str) and not _encodable(text):
                raise ValueError(f"{where}: must be valid Unicode text (a lone surrogate)")
        ids = (self.filter or {}).get("item_id")
        for op, values in (ids.operators() if ids else {}).items():
            if op not in ("in", "not_in") or not all(
                isinstance(v, str) and 0 < len(v) <= ID_CHARS for v in values
            ):
                raise ValueError(f"filter.item_id.{op}: give in or not_in, a list of item ids")
        return self

    def filter_spec(self) -> dict[str, dict[str, Any]] | None:
        return None if self.filter is None else {f: c.operators() for f, c in self.filter.items()}


def _strings(operators: dict[str, Any]) -> list[object]:
    return [x for v in operators.values() for x in (v if isinstance(v, list) else [v])]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RecommendRequest(Rules):
    """What to recommend for. Every field is optional; with none, the most popular items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "u1", "k": 5},
                {"query": "space robots", "k": 5},
                {"user_id": "u1", "query": "space robots", "k": 10, "exclude": ["i3"]},
                {"history": ["i1", "i7"], "k": 5},
                {
                    "user_id": "u1",
                    "k": 10,
                    "offset": 10,
                    "filter": {"year": {"gte": 1990, "lt": 2000}, "in_stock": {"eq": True}},
                    "diversity": {"field": "topic", "max_per_value": 2},
                    "explain": True,
                },
            ]
        },
    )

    user_id: ItemId | None = Field(None, description="A user of the bundle, or unknown.")
    query: StrictStr | None = Field(
        None,
        max_length=QUERY_CHARS,
        pattern=r"\S",
        description="Free text, not blank; encoded by the ONNX encoder (at most "
        "WALRUS_MAX_QUERY_CHARS).",
    )
    history: list[ItemId] | None = Field(
        None,
        max_length=LIST_ITEMS,
        description="Item ids the user just interacted with: folded into the user vector "
        "(at most WALRUS_MAX_HISTORY).",
    )
    k: JsonInt = Field(10, ge=1, le=1000, description="How many items (at most WALRUS_MAX_K).")
    exclude: list[ItemId] | None = Field(
        None,
        max_length=LIST_ITEMS,
        description="Item ids never to return (at most WALRUS_MAX_EXCLUDE).",
    )
    exclude_seen: StrictBool = Field(True, description="Drop the user's known and history items.")
    explain: StrictBool = Field(
        False,
        description="Add each item's explanation: head, WALS and text scores, sources, and "
        "the history items whose terms make up most of its WALS score.",
    )

    @field_validator("user_id", "query", "history", "exclude")
    @classmethod
    def _valid_unicode(cls, value: str | list[str] | None) -> str | list[str] | None:
        """JSON may carry lone UTF-16 surrogates ("\\ud800"), which no tokenizer or log can
        encode: refused here, with the field named, instead of failing deep in the request."""
        for text in [value] if isinstance(value, str) else value or []:
            if not _encodable(text):
                raise ValueError("must be valid Unicode text (it holds a lone surrogate)")
        return value


class SimilarRequest(Rules):
    """``POST /v1/items/{item_id}/similar``: the GET's k, with pages, filter and diversity."""

    model_config = ConfigDict(extra="forbid")

    k: JsonInt = Field(10, ge=1, le=1000, description="How many items.")


class Contribution(BaseModel):
    item_id: str = Field(description="A history item (the user's, or the request's).")
    title: str
    score: float = Field(description="Its term of the WALS score: the terms sum to it.")
    share: float = Field(description="score / wals_score.")


class Explanation(BaseModel):
    head_score: float
    sources: list[Source]
    wals_score: float | None = Field(description="u . v; null without a user vector.")
    text_score: float | None = Field(description="Query (or profile) . item text.")
    because: list[Contribution] = Field(
        description="The largest terms of wals_score, one per history item (at most 3)."
    )
    other_terms: float | None = Field(
        None, description="The sum of the history terms not listed in because."
    )
    rest: float | None = Field(
        None,
        description="wals_score minus all history terms: 0 (to float precision) when the user "
        "vector was folded in from history; for a known user, what training's approximate "
        "(CG) solve left. wals_score = sum(because) + other_terms + rest.",
    )


class Item(BaseModel):
    item_id: str
    title: str
    score: float
    sources: list[Source]
    explanation: Explanation | None = Field(None, description="With explain: true only.")


class RecommendResponse(BaseModel):
    items: list[Item]
    user_known: bool = Field(description="Whether user_id was found in the bundle.")
    bundle_id: str
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage with WALRUS_DEBUG_TIMINGS on; else empty."
    )
    warnings: list[str] = Field(default_factory=list)


class SimilarResponse(BaseModel):
    item_id: str
    source: Literal["wals", "text"] = Field(description="WALS factors, or text for cold items.")
    items: list[Item]
    bundle_id: str
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage with WALRUS_DEBUG_TIMINGS on; else empty."
    )
    warnings: list[str] = Field(
        default_factory=list, description="Such as how many items a filter let through."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    reason: str | None = None
    draining: bool = Field(False, description="Shutting down: finishing what is in flight.")
    refused: dict[str, str] = Field(
        default_factory=dict, description="Bundles refused at load or reload, and why."
    )
    bundle_id: str | None = None
    onnx_providers: list[str] = Field(default_factory=list)
    faiss: Literal["cpu", "gpu"] | None = None
    encoder_precision: str | None = None
    attributes: dict[str, Literal["categorical", "tags", "numeric", "boolean"]] = Field(
        default_factory=dict, description="The bundle's filterable fields and their kinds."
    )
    events: str = Field(
        "off", description="off (no WALRUS_REDIS_URL), ok, or why Redis is not used now."
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="What works less well now, though answers still come (Redis down).",
    )
    counts: dict[str, int] = Field(
        default_factory=dict, description="The bundle's users and items (less withdrawn ones)."
    )


class EventIn(BaseModel):
    """One interaction: ``user_id`` did something with ``item_id``."""

    model_config = ConfigDict(extra="forbid")

    user_id: ItemId = Field(description="Any user: an unknown one becomes a new user.")
    item_id: ItemId = Field(description="An item of the serving bundle.")
    weight: float | None = Field(
        None,
        strict=True,
        description="The interaction's strength, > 0 and <= 1000 (default 1.0): kept for the "
        "next training run (`walrus data events`); online, each event counts as one "
        "interaction, as `history` does.",
    )
    timestamp: float | None = Field(
        None, strict=True, description="Unix seconds; default: when it was received."
    )


class EventsRequest(BaseModel):
    """A batch of events, stored in Redis and folded into the users' next answers."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(
        min_length=1,
        max_length=LIST_ITEMS * 10,
        description="At most WALRUS_EVENTS_MAX_BATCH (default 1,000).",
    )


class RejectedEvent(BaseModel):
    index: int = Field(description="Its place in the posted list, from 0.")
    reason: str


class EventsResponse(BaseModel):
    accepted: int = Field(description="Events stored (acknowledged by Redis).")
    rejected: list[RejectedEvent] = Field(description="The others, each with why.")


class UsersResponse(BaseModel):
    user_ids: list[str] = Field(description="Ids starting with the prefix, in byte order.")
    users: int = Field(description="How many users the bundle has.")


class ReloadResponse(BaseModel):
    bundle_id: str | None = Field(description="The bundle serving after the call.")
    reloaded: bool
    reason: str | None = Field(None, description="Why nothing was swapped in.")
