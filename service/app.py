"""The FastAPI app, composed in one place: ``create_app`` builds it, the lifespan loads the
bundle (never at import), handlers turn input errors into 422 and bugs into a clean 500.

Run: ``walrus serve`` or ``uvicorn service.app:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.api import router
from service.batcher import Batcher
from service.cache import QueryCache
from service.metrics import Metrics
from service.middleware import Guard
from service.recommender import InputError, Recommender
from service.settings import Settings

log = logging.getLogger("walrus.service")


def configure_logging(level: str) -> None:
    """One stderr handler on the ``walrus`` logger: uvicorn configures only its own."""
    root = logging.getLogger("walrus")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; settings default to the ``WALRUS_*`` environment."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    async def load(app: FastAPI) -> None:
        """Load, warm, then serve the bundle; retry a failed load with backoff, showing why
        in ``/readyz`` (the operator may still be copying the bundle in)."""
        metrics: Metrics = app.state.metrics
        cache = QueryCache(settings.query_cache_size, metrics.count_cache_lookup)
        delay = 1.0
        while True:
            try:
                recommender = await run_in_threadpool(Recommender, settings.bundle, settings, cache)
                await run_in_threadpool(recommender.warm_up)
                break
            except Exception as exc:  # anything that stops loading keeps the service un-ready
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                app.state.reason = f"{reason} (retrying in {delay:.0f} s)"
                log.error("not ready: %s", app.state.reason)
                await asyncio.sleep(delay)
                delay = min(2 * delay, settings.load_retry_max_s)
        app.state.batcher = Batcher(
            recommender.recommend_batch,
            max_batch=settings.max_batch,
            wait_us=settings.batch_wait_us,
            workers=settings.batch_workers,
            max_queue=settings.max_queue,
            on_batch=metrics.batch_size.observe,
            on_depth=metrics.queue_depth.set,
        )
        app.state.recommender = recommender
        app.state.reason = None
        log.info(
            "ready: curl -s http://%s:%d/v1/recommend -H 'content-type: application/json' "
            "-d '{\"user_id\": \"%s\", \"query\": \"something to watch\", \"k\": 5}'",
            settings.host, settings.port, recommender.example_user(),
        )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.recommender = None
        app.state.batcher = None
        app.state.reason = "loading the bundle"
        # The pool that runs ONNX and FAISS off the event loop (run_in_threadpool).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        # The port opens at once; /readyz says "loading" until the bundle is loaded and warm.
        loading = asyncio.create_task(load(app))
        yield
        loading.cancel()
        if app.state.batcher is not None:
            await run_in_threadpool(app.state.batcher.close)

    app = FastAPI(
        title="walrus",
        version="0.1.0",
        summary="Hybrid recommender: WALS + text encoder + score head.",
        lifespan=lifespan,
    )
    app.include_router(router)
    # Outermost of the app's own layers: limits apply before any parsing, and the 500s that
    # the error handler below answers are counted too.
    app.state.metrics = Metrics()
    app.add_middleware(Guard, metrics=app.state.metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, and fails (500) on what JSON cannot
        # hold, such as 1e999 or a lone surrogate: answer with where and why only.
        detail = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")),
             "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]  # fmt: skip
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(InputError)
    async def input_error(_request: Request, exc: InputError) -> JSONResponse:
        detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
