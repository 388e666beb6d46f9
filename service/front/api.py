"""HTTP routes: thin. Each one turns a validated request into a call, waits for the engine's
answer within the deadline (or until the client leaves), and sends the answer's body as it
is: the engine wrote that JSON once, and nothing here parses or validates it again."""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from service.front.state import Front
from service.messages import (
    Answer,
    Call,
    Diversity,
    Event,
    Events,
    Readiness,
    Recommend,
    Reload,
    Similar,
    Status,
    Users,
    json_body,
)
from service.metrics import Metrics
from service.schemas import (
    ID_CHARS,
    CapDiversity,
    EventsRequest,
    EventsResponse,
    Health,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    Rules,
    SimilarRequest,
    SimilarResponse,
    UsersResponse,
)
from service.schemas import Readiness as ReadinessSchema


# Dependencies are async: a sync one would cost a thread-pool hop per request.
async def get_front(request: Request) -> Front:
    front: Front = request.app.state.front
    return front


FrontDep = Annotated[Front, Depends(get_front)]

router = APIRouter()
admin_router = APIRouter()
events_router = APIRouter()
bearer = HTTPBearer(auto_error=False)
JSON = "application/json"
STATUS_TIMEOUT_S = 2.0

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Body cannot be read as JSON text (undecodable bytes, too deep)."},
    413: {"description": "Body over WALRUS_MAX_BODY_BYTES (refused before parsing)."},
    415: {"description": "Body not application/json."},
    503: {"description": "Not ready, draining, overloaded or the engine restarting (Retry-After)."},
    504: {"description": "Not answered within WALRUS_DEADLINE_MS."},
}


async def disconnected(request: Request) -> None:
    """Returns when the client goes away (its body was read already, so the next message
    uvicorn delivers is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def ask(front: Front, call: Call, request: Request, timeout_s: float) -> Answer | Response:
    """The engine's answer, or 504 past ``timeout_s``, or 499 when the client left first;
    either way the call is cancelled, so queued work is dropped, not served."""
    work = front.engine.submit(call)
    gone = asyncio.ensure_future(disconnected(request))
    waited: set[asyncio.Future[Any]] = {work, gone}
    try:
        done, _ = await asyncio.wait(waited, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
    if work in done:
        return work.result()
    if gone in done:
        front.metrics.disconnects.inc()
        return Response(status_code=499)  # nobody reads it; logged and counted as such
    front.metrics.deadline_misses.inc()
    raise HTTPException(504, f"not answered within {timeout_s * 1000:.0f} ms")


def send(answer: Answer | Response, request: Request) -> Response:
    if isinstance(answer, Response):
        return answer
    request.state.bundle_id = answer.bundle_id
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else None
    return Response(answer.body, answer.status, headers, media_type=JSON)


def caller(front: Front, body: RecommendRequest, request: Request) -> str | None:
    """The user to recommend for: the body's ``user_id``, or, behind a gateway that
    authenticates users (``WALRUS_USER_HEADER``), that header's, and never the body's: a
    caller could otherwise ask for anyone's recommendations and, with ``exclude_seen``,
    learn their history."""
    header = front.settings.user_header
    if not header:
        return body.user_id
    if body.user_id is not None:
        detail = f"set by the gateway in the {header} header; leave it out of the body"
        raise HTTPException(
            422, [{"loc": ["body", "user_id"], "msg": detail, "type": "value_error"}]
        )
    user = request.headers.get(header)
    if not user or len(user) > ID_CHARS:
        raise HTTPException(401, f"missing {header} header (the gateway sets it)")
    return user


@router.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS)
async def recommend(body: RecommendRequest, front: FrontDep, request: Request) -> Response:
    """Recommendations for a user, a query, a history, any mix of them, or nothing (popular).
    Concurrent requests, from every front, are served together by the engine's batcher."""
    call = Recommend(
        front.engine.next_id(),
        body.k,
        caller(front, body, request),
        body.query,
        body.history,
        body.exclude,
        body.exclude_seen,
        body.offset,
        body.filter_spec(),
        diversity_of(body),
        body.explain,
    )
    return send(await ask(front, call, request, front.settings.deadline_ms / 1000), request)


def diversity_of(body: Rules) -> Diversity | None:
    d = body.diversity
    if isinstance(d, CapDiversity):
        return Diversity(d.field, d.max_per_value, d.mmr)
    return None if d is None else Diversity(mmr=d.mmr)


@router.get(
    "/v1/items/{item_id}/similar",
    response_model=SimilarResponse,
    responses={404: {"description": "Unknown item_id."}, 503: ERRORS[503], 504: ERRORS[504]},
)
async def similar(
    item_id: Annotated[str, Path(max_length=ID_CHARS, description="An item of the bundle.")],
    front: FrontDep,
    request: Request,
    k: Annotated[int, Query(ge=1, le=1000, description="How many items.")] = 10,
    offset: Annotated[int, Query(ge=0, le=100_000, description="Places skipped.")] = 0,
) -> Response:
    """Items similar to one item: WALS factors, or text for cold items, most similar first.
    POST it for a filter or diversity."""
    call = Similar(item_id, k, front.engine.next_id(), offset)
    return send(await ask(front, call, request, front.settings.deadline_ms / 1000), request)


@router.post(
    "/v1/items/{item_id}/similar",
    response_model=SimilarResponse,
    responses={404: {"description": "Unknown item_id."}, **ERRORS},
)
async def similar_with_rules(
    item_id: Annotated[str, Path(max_length=ID_CHARS, description="An item of the bundle.")],
    body: SimilarRequest,
    front: FrontDep,
    request: Request,
) -> Response:
    """Items similar to one item, with the same pages, filter and diversity as
    /v1/recommend."""
    call = Similar(
        item_id,
        body.k,
        front.engine.next_id(),
        body.offset,
        body.filter_spec(),
        diversity_of(body),
    )
    return send(await ask(front, call, request, front.settings.deadline_ms / 1000), request)


@router.get("/v1/users", response_model=UsersResponse, responses={503: ERRORS[503]})
async def users(
    front: FrontDep,
    request: Request,
    prefix: Annotated[str, Query(max_length=ID_CHARS, description="The ids' beginning.")] = "",
    limit: Annotated[int, Query(ge=1, le=100, description="How many at most.")] = 20,
) -> Response:
    """The bundle's user ids that start with ``prefix`` (the page's user picker)."""
    call = Users(prefix, limit, front.engine.next_id())
    return send(await ask(front, call, request, STATUS_TIMEOUT_S), request)


@events_router.post(
    "/v1/events",
    status_code=202,
    response_model=EventsResponse,
    responses={
        **ERRORS,
        503: {"description": "Redis did not take the events (down or slow): Retry-After."},
    },
)
async def post_events(body: EventsRequest, front: FrontDep, request: Request) -> Response:
    """Store users' interactions: the next answer for each of those users folds them in
    (within a second), on every front and every replica sharing the Redis. 202 with how
    many were stored and why each other one was not. Present with WALRUS_REDIS_URL only."""
    limit = front.settings.events_max_batch
    if len(body.events) > limit:
        detail = f"at most {limit} events per call (WALRUS_EVENTS_MAX_BATCH)"
        raise HTTPException(
            422, [{"loc": ["body", "events"], "msg": detail, "type": "value_error"}]
        )
    events = [Event(e.user_id, e.item_id, e.weight, e.timestamp) for e in body.events]
    call = Events(events, front.engine.next_id())
    return send(await ask(front, call, request, front.settings.deadline_ms / 1000), request)


@admin_router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={401: {"description": "No bearer token"}, 403: {"description": "Wrong token"}},
)
async def reload(
    front: FrontDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """The engine loads what WALRUS_BUNDLE names now (verified and warmed before it serves),
    once for the whole machine; the old bundle serves until then, and on if the new one is
    refused. Needs ``Authorization: Bearer $WALRUS_ADMIN_TOKEN``."""
    token = front.settings.admin_token
    client = request.client.host if request.client else "?"
    wait = front.admin_failures.retry_after(client)
    if wait:
        raise HTTPException(429, "too many wrong admin tokens", {"Retry-After": str(wait)})
    if credentials is None:
        raise HTTPException(
            401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
        )
    if token is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        front.admin_failures.failed(client)
        raise HTTPException(403, "wrong admin token")
    timeout_s = max(front.settings.deadline_ms / 1000, 600.0)  # a load takes what it takes
    return send(await ask(front, Reload(front.engine.next_id()), request, timeout_s), request)


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is alive (not necessarily ready)."""
    return Response(b'{"status":"ok"}', media_type=JSON)


@router.get("/readyz", response_model=ReadinessSchema, responses={503: {"model": ReadinessSchema}})
async def readyz(front: FrontDep, request: Request) -> Response:
    """The engine has a bundle loaded, verified and warm, and this front is not shutting
    down; says which bundle and devices serve, and which bundles were refused and why."""
    if front.draining:
        draining = Readiness(ready=False, reason="draining: shutting down", draining=True)
        return Response(json_body(draining), 503, media_type=JSON)
    answer = await ask(front, Status(front.engine.next_id()), request, STATUS_TIMEOUT_S)
    return send(answer, request)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition."}
    },
)
async def metrics_endpoint(front: FrontDep) -> Response:
    """Prometheus exposition: every front's and the engine's series (built off the event
    loop, at most once a second)."""
    metrics: Metrics = front.metrics
    body = await asyncio.to_thread(metrics.exposition_cached)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(front: FrontDep, request: Request) -> Response:
    """The OpenAPI document (``configured_openapi``), with the filterable fields of the
    bundle the engine serves now: a filter naming another field is a 422."""
    try:
        answer = await ask(front, Status(front.engine.next_id()), request, STATUS_TIMEOUT_S)
    except HTTPException:
        answer = Response(status_code=504)
    attributes: dict[str, str] = {}
    if isinstance(answer, Answer):
        attributes = msgspec.json.decode(answer.body, type=Readiness).attributes
    doc = with_attributes(request.app.openapi(), attributes)
    return Response(msgspec.json.encode(doc), media_type=JSON)


def with_attributes(doc: dict[str, Any], attributes: dict[str, str]) -> dict[str, Any]:
    """A copy of ``doc`` whose request bodies take exactly this bundle's fields: ``filter``
    lists each attribute (and ``item_id``) with the operators and value types of its kind,
    and a diversity cap names only categorical or boolean fields. A request the document
    allows is then one the engine accepts."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    listed = ", ".join(f"{name} ({kind})" for name, kind in attributes.items()) or "none"
    fields = {name: condition_schema(kind) for name, kind in attributes.items()}
    fields["item_id"] = condition_schema("item_id")
    cappable = [n for n, kind in attributes.items() if kind in ("categorical", "boolean")]
    for body in ("RecommendRequest", "SimilarRequest"):
        props = schemas[body]["properties"]
        props["filter"]["description"] += f" This bundle's fields: {listed}; and item_id."
        props["filter"]["x-walrus-attributes"] = attributes
        for branch in props["filter"]["anyOf"]:
            if branch.get("type") == "object":
                branch.pop("additionalProperties", None)
                branch.pop("propertyNames", None)
                branch.update(properties=fields, additionalProperties=False)
        if not cappable:  # no field to cap: only MMR
            props["diversity"]["anyOf"] = [
                b for b in props["diversity"]["anyOf"] if "CapDiversity" not in b.get("$ref", "")
            ]
    schemas["CapDiversity"]["properties"]["field"]["enum"] = cappable
    return doc


OPERATOR_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "categorical": {
        "eq": {"type": "string"},
        "ne": {"type": "string"},
        "in": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "not_in": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "boolean": {
        "eq": {"type": "boolean"},
        "ne": {"type": "boolean"},
        "in": {"type": "array", "items": {"type": "boolean"}, "minItems": 1},
        "not_in": {"type": "array", "items": {"type": "boolean"}, "minItems": 1},
    },
    "tags": {
        op: {"type": "array", "items": {"type": "string"}, "minItems": 1}
        for op in ("any", "all", "none")
    },
    "numeric": {op: {"type": "number"} for op in ("gt", "gte", "lt", "lte")},
    "item_id": {
        op: {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": ID_CHARS},
            "minItems": 1,
        }
        for op in ("in", "not_in")
    },
}


def condition_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of one field's condition: the operators its kind takes."""
    return {
        "type": "object",
        "properties": OPERATOR_VALUES[kind],
        "additionalProperties": False,
        "minProperties": 1,
    }


@router.get("/docs", include_in_schema=False)
async def docs() -> Response:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="walrus")
