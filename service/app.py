"""The FastAPI app, composed in one place: ``create_app`` builds it, the lifespan loads the
bundle (never at import), handlers turn input errors into 422 and bugs into a clean 500.

Run: ``walrus serve`` or ``uvicorn service.app:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from service.api import admin_router, router
from service.lifecycle import Bundles
from service.metrics import Metrics
from service.middleware import Guard
from service.recommender import InputError
from service.settings import Settings

log = logging.getLogger("walrus.service")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """One stderr handler on the ``walrus`` logger writing JSON lines (uvicorn configures
    only its own loggers)."""
    root = logging.getLogger("walrus")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; settings default to the ``WALRUS_*`` environment."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        bundles: Bundles = app.state.bundles
        # The pool that runs /similar off the event loop (run_in_threadpool).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        drain_on_sigterm(bundles, settings.drain_s)
        # The port opens at once; /readyz says "loading" until the bundle is loaded and warm.
        tasks = [asyncio.create_task(bundles.start()), asyncio.create_task(bundles.watch())]
        yield
        for task in tasks:
            task.cancel()
        await bundles.close()

    app = FastAPI(
        title="walrus",
        version="0.1.0",
        summary="Hybrid recommender: WALS + text encoder + score head.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.openapi = lambda: configured_openapi(app, settings)  # type: ignore[method-assign]
    if settings.admin_token is not None:
        app.include_router(admin_router)  # no token configured: the route does not exist
    app.state.metrics = metrics = Metrics()
    app.state.bundles = Bundles(settings, metrics)
    # Outermost of the app's own layers: limits apply before any parsing, and the 500s that
    # the error handler below answers are counted too.
    app.add_middleware(Guard, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, and fails (500) on what JSON cannot
        # hold, such as 1e999 or a lone surrogate: answer with where and why only.
        detail = [
            {
                "loc": list(err.get("loc", ())),
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
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


def configured_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's OpenAPI document with this deployment's own limits (WALRUS_MAX_K,
    _MAX_QUERY_CHARS, _MAX_HISTORY, _MAX_EXCLUDE) in place of the schemas' hard caps, so
    that what the document allows is exactly what the service accepts."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        fields = doc["components"]["schemas"]["RecommendRequest"]["properties"]
        fields["k"]["maximum"] = settings.max_k
        for name, key, limit in (
            ("query", "maxLength", settings.max_query_chars),
            ("history", "maxItems", settings.max_history),
            ("exclude", "maxItems", settings.max_exclude),
        ):
            for branch in fields[name].get("anyOf", [fields[name]]):
                if key in branch:
                    branch[key] = limit
        for parameter in doc["paths"]["/v1/items/{item_id}/similar"]["get"]["parameters"]:
            if parameter["name"] == "k":
                parameter["schema"]["maximum"] = settings.max_k
        app.openapi_schema = doc
    return app.openapi_schema


def drain_on_sigterm(bundles: Bundles, drain_s: float) -> None:
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

    def stop() -> None:
        if server is not None and hasattr(server, "should_exit"):
            server.should_exit = True
        elif callable(uvicorn_handler):
            uvicorn_handler(signal.SIGTERM, None)

    def on_sigterm(_sig: int, _frame: FrameType | None) -> None:
        if bundles.draining:
            return
        bundles.draining = True
        log.info("SIGTERM: draining for %.1f s, then finishing in-flight requests", drain_s)
        loop.call_soon_threadsafe(loop.call_later, drain_s, stop)

    signal.signal(signal.SIGTERM, on_sigterm)
