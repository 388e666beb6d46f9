"""The outermost ASGI layer of the app: body limits before any parsing, request counts that
include the 500s (a Starlette ``http`` middleware never sees them: the exception passes
through it to the error handler outside it), and one JSON log line per request with its
request id (``X-Request-ID``, taken from the client or made, and sent back)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import AccessLog
from service.metrics import Metrics

JSON_TYPES = ("application/json",)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what may be echoed into logs and headers


class Guard:
    """Reads a request body of at most ``max_body_bytes`` before the app sees it (413 past
    that, whatever Content-Length claims), refuses bodies that are not JSON (415), and counts
    every answer by endpoint and status."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        larger: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.larger = larger or {}  # paths whose bodies may be larger (a batch of events)
        self.access = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = None
            if scope["method"] in ("POST", "PUT", "PATCH"):
                refusal, receive = await self._read_body(scope, receive)
            if refusal is not None:
                await _json(send_counted, *refusal)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            # No user ids, queries or bodies at INFO: ids of people and their words stay out
            # of the logs.
            self.access.write(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "endpoint": endpoint,
                    "status": status[0],
                    "ms": round(seconds * 1e3, 3),
                    "bundle_id": scope["state"].get("bundle_id"),
                }
            )

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[tuple[int, str, str] | None, Receive]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        declared = headers.get("content-length", "")
        bodiless = declared == "0" or (not declared and "transfer-encoding" not in headers)
        if kind not in JSON_TYPES and not (bodiless and not kind):  # no body, no type: fine
            shown = kind or "none"
            return (415, "content-type", f"send application/json, not {shown}"), receive
        limit = self.larger.get(scope["path"], self.max_body_bytes)
        too_big = (413, "body", f"the body must be at most {limit} bytes")
        if declared.isdigit() and int(declared) > limit:
            return too_big, receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_big, receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


async def _json(send: Any, status: int, field: str, message: str) -> None:
    where = "body" if field == "body" else "header"
    error = {"loc": [where, field], "msg": message, "type": "request_error"}
    body = json.dumps({"detail": [error]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
