"""A front: the FastAPI app, composed in one place. It parses and validates requests, answers
HTTP, and asks an engine (``EngineLink``) for everything else: it holds no bundle arrays, no
ONNX session and no FAISS index (import-linter keeps onnxruntime and faiss out of
``service.front``).

``create_app`` is the front of ``walrus serve``'s process mode, linked to the engine process
at ``WALRUS_ENGINE__ADDRESS``; ``service.inline.create_app`` composes the same front with an
engine inside it. Run: ``walrus serve``, or ``uvicorn service.inline:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from service.api import ApiError
from service.front.client import EngineClient, EngineLink
from service.front.document import with_limits
from service.front.errors import api_error
from service.front.middleware import Guard
from service.front.routes import admin_router, events_router, router
from service.front.state import FailedAttempts, Front
from service.front.ui import ui_router
from service.logs import configure_logging
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("walrus.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A front of process mode: the engine is another process, at WALRUS_ENGINE__ADDRESS."""
    settings = settings or Settings()
    if not settings.engine.address:
        raise RuntimeError("a front needs WALRUS_ENGINE__ADDRESS: start it with `walrus serve`")
    return build_app(settings, EngineClient(settings.engine.address), Metrics())


def build_app(settings: Settings, engine: EngineLink, metrics: Metrics) -> FastAPI:
    """The app: routes, middleware and handlers around ``engine``; the lifespan starts and
    stops the link (never at import)."""
    configure_logging(settings.log_level)
    front = Front(settings, engine, metrics, FailedAttempts(settings.front.admin_max_failures))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        drain_on_sigterm(front)
        await engine.start()
        yield
        await engine.close()

    app = FastAPI(
        title="walrus",
        version="0.1.0",
        summary="Hybrid recommender: WALS + text encoder + score head.",
        lifespan=lifespan,
        # service.front.routes serves both: the document names the serving bundle's fields.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.front = front
    app.include_router(router)
    app.openapi = lambda: configured_openapi(app, settings)  # type: ignore[method-assign]
    if settings.front.admin_token is not None:
        app.include_router(admin_router)  # no token configured: the route does not exist
    if settings.events.redis_url:
        app.include_router(events_router)  # no Redis: no events
    if settings.front.ui:
        app.include_router(ui_router())
    # Outermost of the app's own layers: limits apply before any parsing, and the 500s that
    # the error handler below answers are counted too.
    app.add_middleware(
        Guard,
        metrics=metrics,
        max_body_bytes=settings.front.max_body_bytes,
        larger={"/v1/events": settings.events.max_body_bytes},
    )
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, bug)
    return app


async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own handler echoes the input back, and fails (500) on what JSON cannot hold,
    such as 1e999 or a lone surrogate: answer with where and why only."""
    detail = [
        {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def bug(request: Request, _exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def configured_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's OpenAPI document of the routes, with the public types as its components
    and this deployment's own limits in them (``service.front.document``)."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        app.openapi_schema = with_limits(doc, settings)
    return app.openapi_schema


def drain_on_sigterm(front: Front) -> None:
    """SIGTERM starts a drain instead of a stop: ``/readyz`` turns 503 at once (the load
    balancer stops sending), requests are still served for ``drain_s``, then uvicorn's own
    graceful shutdown lets in-flight requests finish and the process exits 0.

    uvicorn installs its handler while it serves (the lifespan runs inside that), so ours
    wraps it. Setting ``should_exit`` on uvicorn's server ourselves, rather than calling its
    handler, keeps it from re-raising SIGTERM at exit (which would end the process by the
    signal, status 143)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals only reach the main thread (an in-process test client)
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    server = getattr(uvicorn_handler, "__self__", None)
    loop = asyncio.get_running_loop()
    drain_s = front.settings.front.drain_s

    def stop() -> None:
        if server is not None and hasattr(server, "should_exit"):
            server.should_exit = True
        elif callable(uvicorn_handler):
            uvicorn_handler(signal.SIGTERM, None)

    def on_sigterm(_sig: int, _frame: FrameType | None) -> None:
        if front.draining:
            return
        front.draining = True
        log.info("SIGTERM: draining for %.1f s, then finishing in-flight requests", drain_s)
        loop.call_soon_threadsafe(loop.call_later, drain_s, stop)

    signal.signal(signal.SIGTERM, on_sigterm)
