"""HTTP routes: thin. Each one turns a validated request into a call, waits for the engine's
answer within the deadline (or until the client leaves), and sends the answer's body as it
is: the engine wrote that JSON once, and nothing here parses or validates it again."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from service.front.state import Front
from service.messages import (
    Answer,
    Call,
    Readiness,
    Recommend,
    Reload,
    Similar,
    Status,
    json_body,
)
from service.metrics import Metrics
from service.schemas import (
    ID_CHARS,
    Health,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    SimilarResponse,
)
from service.schemas import Readiness as ReadinessSchema


# Dependencies are async: a sync one would cost a thread-pool hop per request.
async def get_front(request: Request) -> Front:
    front: Front = request.app.state.front
    return front


FrontDep = Annotated[Front, Depends(get_front)]

router = APIRouter()
admin_router = APIRouter()
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
    )
    return send(await ask(front, call, request, front.settings.deadline_ms / 1000), request)


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
) -> Response:
    """Items similar to one item: WALS factors, or text for cold items."""
    call = Similar(item_id, k, front.engine.next_id())
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
