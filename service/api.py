"""HTTP routes: thin; the work is in ``service.recommender``, run off the event loop."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from service.batcher import Batcher, Overloaded
from service.metrics import Metrics
from service.recommender import Recommender, UnknownItem
from service.schemas import Health, Readiness, RecommendRequest, RecommendResponse, SimilarResponse


# Dependencies are async: a sync one would cost a thread-pool hop per request.
async def get_recommender(request: Request) -> Recommender:
    recommender = request.app.state.recommender
    if recommender is None:
        raise HTTPException(503, f"not ready: {request.app.state.reason}")
    return recommender


async def get_batcher(request: Request) -> Batcher[RecommendRequest, RecommendResponse]:
    batcher = request.app.state.batcher
    if batcher is None:
        raise HTTPException(503, f"not ready: {request.app.state.reason}")
    return batcher


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
BatcherDep = Annotated[Batcher[RecommendRequest, RecommendResponse], Depends(get_batcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

router = APIRouter()


@router.post("/v1/recommend", response_model=RecommendResponse)
async def recommend(
    body: RecommendRequest, batcher: BatcherDep, metrics: MetricsDep, request: Request
) -> RecommendResponse:
    """Recommendations for a user, a query, a history, any mix of them, or nothing (popular).
    Concurrent requests are served together by the dynamic batcher."""
    deadline = request.app.state.settings.deadline_ms / 1000
    try:
        response = await asyncio.wait_for(batcher.submit(body), timeout=deadline)
    except Overloaded:
        metrics.shed.inc()
        raise HTTPException(503, "overloaded: retry shortly", {"Retry-After": "1"}) from None
    except TimeoutError:
        metrics.deadline_misses.inc()
        raise HTTPException(504, f"not answered within {deadline * 1000:.0f} ms") from None
    metrics.observe_stages(response.timings_ms)
    return response


@router.get("/v1/items/{item_id}/similar", response_model=SimilarResponse)
async def similar(
    item_id: str,
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
async def readyz(request: Request, response: Response) -> Readiness:
    """Bundle loaded and verified; says which devices serve."""
    recommender: Recommender | None = request.app.state.recommender
    if recommender is None:
        response.status_code = 503
        return Readiness(ready=False, reason=request.app.state.reason)
    return Readiness(
        ready=True,
        bundle_id=recommender.bundle_id,
        onnx_providers=recommender.onnx_providers,
        faiss=recommender.faiss_device,
        encoder_precision=recommender.encoder_precision,
    )


@router.get("/metrics")
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus exposition."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
