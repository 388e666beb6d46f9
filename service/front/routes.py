"""HTTP routes: thin. Each one decodes its body into the public type (``service.api``),
turns it into a call, waits for the engine's answer within the deadline (or until the
client leaves), and sends the result's JSON as the engine wrote it, or the failure as
``service.front.errors`` words it."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any, TypeVar

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from service.api import (
    ID_CHARS,
    ErrorBody,
    EventsAccepted,
    EventsRequest,
    ExperimentReport,
    ExperimentRequest,
    Failure,
    Health,
    InvalidInput,
    Readiness,
    Recommendations,
    RecommendRequest,
    Reloaded,
    SimilarItems,
    SimilarRequest,
    UserIds,
    check,
    decode,
)
from service.front.document import EXAMPLES, body_doc, result_doc, with_attributes
from service.front.errors import response
from service.front.state import Front
from service.messages import (
    Answer,
    Call,
    Events,
    Experiment,
    Experiments,
    Recommend,
    Reload,
    Similar,
    Status,
    Users,
    json_body,
)
from service.metrics import Metrics

T = TypeVar("T")


# Dependencies are async: a sync one would cost a thread-pool hop per request.
async def get_front(request: Request) -> Front:
    front: Front = request.app.state.front
    return front


FrontDep = Annotated[Front, Depends(get_front)]


async def read(request: Request, kind: type[T]) -> T:
    """The body as ``kind``, within the deployment's limits: 422 naming the field, 400 for
    bytes no JSON reader takes (not UTF-8, nested past the reader's depth)."""
    try:
        body = decode(await request.body(), kind)
    except (ValueError, RecursionError):  # InvalidInput is not one: it is no ValueError
        raise HTTPException(400, "the body cannot be read as JSON text") from None
    check(body, request.app.state.front.settings)  # type: ignore[arg-type]
    return body


async def recommend_body(request: Request) -> RecommendRequest:
    return await read(request, RecommendRequest)


async def similar_body(request: Request) -> SimilarRequest:
    return await read(request, SimilarRequest)


async def events_body(request: Request) -> EventsRequest:
    return await read(request, EventsRequest)


router = APIRouter()
admin_router = APIRouter()
events_router = APIRouter()
bearer = HTTPBearer(auto_error=False)
STATUS_TIMEOUT_S = 2.0

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Body cannot be read as JSON text (undecodable bytes, too deep)."},
    413: {"description": "Body over WALRUS_FRONT__MAX_BODY_BYTES (refused before parsing)."},
    415: {"description": "Body not application/json."},
    422: result_doc(ErrorBody, "A field is wrong: `loc` names it."),
    503: {"description": "Not ready, draining, overloaded or the engine restarting (Retry-After)."},
    504: {"description": "Not answered within WALRUS_FRONT__DEADLINE_MS."},
}


async def disconnected(request: Request) -> None:
    """Returns when the client goes away (its body was read already, so the next message
    uvicorn delivers is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def ask(front: Front, call: Call, request: Request, timeout_s: float) -> Answer | Response:
    """The engine's answer, or a timeout failure past ``timeout_s``, or 499 when the client
    left first; either way the call is cancelled, so queued work is dropped, not served."""
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
    message = f"not answered within {timeout_s * 1000:.0f} ms"
    return Answer(call.id, failure=Failure("timeout", message))


def send(answer: Answer | Response, request: Request, status: int = 200) -> Response:
    """The answer as HTTP: the result's JSON with ``status``, or its failure's response."""
    if isinstance(answer, Response):
        return answer
    request.state.bundle_id = answer.bundle_id
    if answer.failure is not None:
        return response(answer.failure)
    return Response(answer.body, status, media_type="application/json")


def caller(front: Front, body: RecommendRequest, request: Request) -> str | None:
    """The user to recommend for: the body's ``user_id``, or, behind a gateway that
    authenticates users (``WALRUS_FRONT__USER_HEADER``), that header's, and never the body's: a
    caller could otherwise ask for anyone's recommendations and, with ``exclude_seen``,
    learn their history."""
    header = front.settings.front.user_header
    if not header:
        return body.user_id
    if body.user_id is not None:
        detail = f"set by the gateway in the {header} header; leave it out of the body"
        raise InvalidInput(detail, "user_id")
    user = request.headers.get(header)
    if not user or len(user) > ID_CHARS:
        raise HTTPException(401, f"missing {header} header (the gateway sets it)")
    return user


@router.post(
    "/v1/recommend",
    openapi_extra=body_doc(RecommendRequest, EXAMPLES),
    responses={200: result_doc(Recommendations), **ERRORS},
)
async def recommend(
    body: Annotated[RecommendRequest, Depends(recommend_body)], front: FrontDep, request: Request
) -> Response:
    """Recommendations for a user, a query, a history, any mix of them, or nothing (popular).
    Concurrent requests, from every front, are served together by the engine's batcher."""
    fields = msgspec.structs.asdict(body)
    fields["user_id"] = caller(front, body, request)
    call = Recommend(id=front.engine.next_id(), **fields)
    return send(await ask(front, call, request, front.settings.front.deadline_ms / 1000), request)


SIMILAR_ERRORS: dict[int | str, dict[str, Any]] = {
    200: result_doc(SimilarItems),
    404: {"description": "Unknown item_id."},
}
ItemPath = Annotated[str, Path(max_length=ID_CHARS, description="An item of the bundle.")]


@router.get("/v1/items/{item_id}/similar", responses={**SIMILAR_ERRORS, **ERRORS})
async def similar(
    item_id: ItemPath,
    front: FrontDep,
    request: Request,
    k: Annotated[int, Query(ge=1, description="How many items.")] = 10,
    offset: Annotated[int, Query(ge=0, description="Places skipped.")] = 0,
) -> Response:
    """Items similar to one item: WALS factors, or text for cold items, most similar first.
    POST it for a filter or diversity."""
    call = Similar(item_id=item_id, k=k, offset=offset, id=front.engine.next_id())
    try:
        check(call, front.settings)
    except InvalidInput as exc:
        return response(exc.failure(), "query")
    return send(await ask(front, call, request, front.settings.front.deadline_ms / 1000), request)


@router.post(
    "/v1/items/{item_id}/similar",
    openapi_extra=body_doc(SimilarRequest),
    responses={**SIMILAR_ERRORS, **ERRORS},
)
async def similar_with_rules(
    item_id: ItemPath,
    body: Annotated[SimilarRequest, Depends(similar_body)],
    front: FrontDep,
    request: Request,
) -> Response:
    """Items similar to one item, with the same pages, filter and diversity as
    /v1/recommend."""
    fields = msgspec.structs.asdict(body)
    call = Similar(item_id=item_id, id=front.engine.next_id(), **fields)
    return send(await ask(front, call, request, front.settings.front.deadline_ms / 1000), request)


@router.get("/v1/users", responses={200: result_doc(UserIds), 503: ERRORS[503]})
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
    openapi_extra=body_doc(EventsRequest),
    responses={
        202: result_doc(EventsAccepted),
        **ERRORS,
        503: {"description": "Redis did not take the events (down or slow): Retry-After."},
    },
)
async def post_events(
    body: Annotated[EventsRequest, Depends(events_body)], front: FrontDep, request: Request
) -> Response:
    """Store users' interactions: the next answer for each of those users folds them in
    (within a second), on every front and every replica sharing the Redis. 202 with how
    many were stored and why each other one was not. Present with WALRUS_EVENTS__REDIS_URL only."""
    call = Events(events=body.events, id=front.engine.next_id())
    answer = await ask(front, call, request, front.settings.front.deadline_ms / 1000)
    return send(answer, request, 202)


async def admin(
    front: FrontDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The admin token, or 401 (none sent), 403 (wrong) or 429 (too many wrong ones from
    this address this minute)."""
    token = front.settings.front.admin_token
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


AdminDep = Annotated[None, Depends(admin)]
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token"},
    403: {"description": "Wrong token"},
    429: {"description": "Too many wrong tokens from this address (Retry-After)."},
}


async def experiment_body(request: Request) -> ExperimentRequest:
    return await read(request, ExperimentRequest)


@admin_router.post("/admin/reload", responses={200: result_doc(Reloaded), **ADMIN_ERRORS})
async def reload(_admin: AdminDep, front: FrontDep, request: Request) -> Response:
    """The engine loads what WALRUS_BUNDLE names now (verified and warmed before it serves),
    once for the whole machine; the old bundle serves until then, and on if the new one is
    refused. Needs ``Authorization: Bearer $WALRUS_FRONT__ADMIN_TOKEN``."""
    timeout_s = max(front.settings.front.deadline_ms / 1000, 600.0)  # a load takes what it takes
    return send(await ask(front, Reload(front.engine.next_id()), request, timeout_s), request)


@admin_router.post(
    "/admin/experiment",
    openapi_extra=body_doc(ExperimentRequest),
    responses={
        200: result_doc(ExperimentReport),
        **ADMIN_ERRORS,
        404: {"description": "Experiments are off: WALRUS_BUNDLE is no local bundles folder."},
        409: {"description": "No experiment running (ramp, promote, stop)."},
        422: result_doc(ErrorBody, "A field is wrong (an unknown or refused candidate)."),
    },
)
async def experiment(
    _admin: AdminDep,
    body: Annotated[ExperimentRequest, Depends(experiment_body)],
    front: FrontDep,
    request: Request,
) -> Response:
    """Start an experiment (a candidate bundle serves ``share`` of users, assigned by a
    salted hash of their id), ramp its share, promote the candidate to ``current``, or stop
    it. The plan is written beside ``current``: every replica follows it. Answers the
    experiment as it then serves. Needs the admin token."""
    call = Experiment(id=front.engine.next_id(), **msgspec.structs.asdict(body))
    timeout_s = max(front.settings.front.deadline_ms / 1000, 600.0)  # a start loads a bundle
    return send(await ask(front, call, request, timeout_s), request)


@admin_router.get("/v1/experiments", responses={200: result_doc(ExperimentReport), **ADMIN_ERRORS})
async def experiments(_admin: AdminDep, front: FrontDep, request: Request) -> Response:
    """The running experiment and each arm's online figures: answers, attributed events by
    type, CTR with its 95% interval, and the difference between arms with its interval.
    Needs the admin token."""
    call = Experiments(front.engine.next_id())
    return send(await ask(front, call, request, STATUS_TIMEOUT_S), request)


@router.get("/healthz", responses={200: result_doc(Health)})
async def healthz() -> Response:
    """The process is alive (not necessarily ready)."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", responses={200: result_doc(Readiness), 503: result_doc(Readiness)})
async def readyz(front: FrontDep, request: Request) -> Response:
    """The engine has a bundle loaded, verified and warm, and this front is not shutting
    down; says which bundle and devices serve, and which bundles were refused and why."""
    if front.draining:
        draining = Readiness(ready=False, reason="draining: shutting down", draining=True)
        return Response(json_body(draining), 503, media_type="application/json")
    answer = await ask(front, Status(front.engine.next_id()), request, STATUS_TIMEOUT_S)
    if isinstance(answer, Answer) and answer.failure is None:
        ready = msgspec.json.decode(answer.body, type=Readiness).ready
        return send(answer, request, 200 if ready else 503)
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
    """The OpenAPI document (``service.front.document``), with the filterable fields of the
    bundle the engine serves now: a filter naming another field is a 422."""
    answer = await ask(front, Status(front.engine.next_id()), request, STATUS_TIMEOUT_S)
    attributes: dict[str, str] = {}
    if isinstance(answer, Answer) and answer.failure is None:
        attributes = dict(msgspec.json.decode(answer.body, type=Readiness).attributes)
    doc = with_attributes(request.app.openapi(), attributes)
    return Response(msgspec.json.encode(doc), media_type="application/json")


@router.get("/docs", include_in_schema=False)
async def docs() -> Response:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="walrus")
