"""HTTP routes: thin; the work is in ``service.recommender``, run off the event loop."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from service.batcher import Overloaded
from service.lifecycle import Bundles, NotReady
from service.metrics import Metrics
from service.recommender import Recommender, UnknownItem
from service.schemas import (
    ID_CHARS,
    Health,
    Readiness,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    SimilarResponse,
)


# Dependencies are async: a sync one would cost a thread-pool hop per request.
async def get_bundles(request: Request) -> Bundles:
    bundles: Bundles = request.app.state.bundles
    return bundles


async def get_recommender(bundles: BundlesDep) -> Recommender:
    serving = bundles.serving
    if serving is None:
        raise HTTPException(503, f"not ready: {bundles.reason}")
    return serving.recommender


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


BundlesDep = Annotated[Bundles, Depends(get_bundles)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

router = APIRouter()
admin_router = APIRouter()
bearer = HTTPBearer(auto_error=False)


async def disconnected(request: Request) -> None:
    """Returns when the client goes away (its body was read already, so the next message
    uvicorn delivers is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Body cannot be read as JSON text (undecodable bytes, too deep)."},
    413: {"description": "Body over WALRUS_MAX_BODY_BYTES (refused before parsing)."},
    415: {"description": "Body not application/json."},
    503: {"description": "Not ready, draining, or overloaded (Retry-After)."},
    504: {"description": "Not answered within WALRUS_DEADLINE_MS."},
}


@router.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS)
async def recommend(
    body: RecommendRequest, bundles: BundlesDep, metrics: MetricsDep, request: Request
) -> RecommendResponse | Response:
    """Recommendations for a user, a query, a history, any mix of them, or nothing (popular).
    Concurrent requests are served together by the dynamic batcher."""
    deadline = request.app.state.settings.deadline_ms / 1000
    work = asyncio.ensure_future(bundles.recommend(body))
    gone = asyncio.ensure_future(disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {work, gone}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()  # deadline or disconnect: queued work is dropped, not served
    if work not in done:
        if gone in done:
            metrics.disconnects.inc()
            return Response(status_code=499)  # nobody reads it; logged and counted as such
        metrics.deadline_misses.inc()
        raise HTTPException(504, f"not answered within {deadline * 1000:.0f} ms")
    try:
        response = work.result()
    except Overloaded:
        metrics.shed.inc()
        raise HTTPException(503, "overloaded: retry shortly", {"Retry-After": "1"}) from None
    except NotReady as exc:
        raise HTTPException(503, f"not ready: {exc}") from None
    request.state.bundle_id = response.bundle_id
    metrics.observe_stages(response.timings_ms)
    return response


@admin_router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={401: {"description": "No bearer token"}, 403: {"description": "Wrong token"}},
)
async def reload(
    bundles: BundlesDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ReloadResponse:
    """Load what WALRUS_BUNDLE names now (verified and warmed before it serves); the old
    bundle serves until then, and on if the new one is refused. Needs
    ``Authorization: Bearer $WALRUS_ADMIN_TOKEN``."""
    token = request.app.state.settings.admin_token
    if credentials is None:
        raise HTTPException(
            401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
        )
    if token is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(403, "wrong admin token")
    return await bundles.reload()


@router.get(
    "/v1/items/{item_id}/similar",
    response_model=SimilarResponse,
    responses={404: {"description": "Unknown item_id."}, 503: ERRORS[503]},
)
async def similar(
    item_id: Annotated[str, Path(max_length=ID_CHARS, description="An item of the bundle.")],
    recommender: RecommenderDep,
    metrics: MetricsDep,
    k: Annotated[int, Query(ge=1, le=1000, description="How many items.")] = 10,
) -> SimilarResponse:
    """Items similar to one item: WALS factors, or text for cold items."""
    try:
        response = await run_in_threadpool(recommender.similar, item_id, k)
    except UnknownItem:
        raise HTTPException(404, f"unknown item_id {item_id!r}") from None
    metrics.observe_stages(response.timings_ms)
    return response


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (not necessarily ready)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(bundles: BundlesDep, response: Response) -> Readiness:
    """Bundle loaded, verified and warm, and not shutting down; says which bundle and devices
    serve, and which bundles were refused and why."""
    serving = bundles.serving
    if serving is None or bundles.draining:
        response.status_code = 503
        reason = "draining: shutting down" if bundles.draining else bundles.reason
        return Readiness(
            ready=False, reason=reason, draining=bundles.draining, refused=bundles.refused
        )
    recommender = serving.recommender
    return Readiness(
        ready=True,
        bundle_id=recommender.bundle_id,
        onnx_providers=recommender.onnx_providers,
        faiss=recommender.faiss_device,
        encoder_precision=recommender.encoder_precision,
        refused=bundles.refused,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition."}
    },
)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus exposition."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
