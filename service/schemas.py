"""Request and response bodies. Strict types: a wrong-typed field is a 422, not a coercion."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    field_validator,
)

Source = Literal["wals", "text", "popular"]
# Hard limits, visible in the OpenAPI document; WALRUS_MAX_K, _MAX_QUERY_CHARS, _MAX_HISTORY
# and _MAX_EXCLUDE may lower them further (422 naming the field either way).
ID_CHARS = 256
QUERY_CHARS = 4096
LIST_ITEMS = 10_000
ItemId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=ID_CHARS)]


class RecommendRequest(BaseModel):
    """What to recommend for. Every field is optional; with none, the most popular items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "u1", "k": 5},
                {"query": "space robots", "k": 5},
                {"user_id": "u1", "query": "space robots", "k": 10, "exclude": ["i3"]},
                {"history": ["i1", "i7"], "k": 5},
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
    k: int = Field(10, ge=1, le=1000, description="How many items (at most WALRUS_MAX_K).")
    exclude: list[ItemId] | None = Field(
        None,
        max_length=LIST_ITEMS,
        description="Item ids never to return (at most WALRUS_MAX_EXCLUDE).",
    )
    exclude_seen: StrictBool = Field(True, description="Drop the user's known and history items.")

    @field_validator("k", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        """A JSON integer: 5 or 5.0 (JSON Schema's integer), never "5" or true."""
        if isinstance(value, str | bool):
            raise ValueError("k must be a JSON number without a fraction")
        return value

    @field_validator("user_id", "query", "history", "exclude")
    @classmethod
    def _valid_unicode(cls, value: str | list[str] | None) -> str | list[str] | None:
        """JSON may carry lone UTF-16 surrogates ("\\ud800"), which no tokenizer or log can
        encode: refused here, with the field named, instead of failing deep in the request."""
        for text in [value] if isinstance(value, str) else value or []:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
        return value


class Item(BaseModel):
    item_id: str
    title: str
    score: float
    sources: list[Source]


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


class ReloadResponse(BaseModel):
    bundle_id: str | None = Field(description="The bundle serving after the call.")
    reloaded: bool
    reason: str | None = Field(None, description="Why nothing was swapped in.")
