"""Failures as HTTP: the one place that gives each kind of failure its status and body,
whether the engine answered it or the front found it (a body that does not decode)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from service.api import ApiError, ErrorBody, ErrorDetail, Failure
from service.messages import json_body

STATUS = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "disabled": 404,
    "unavailable": 503,
    "timeout": 504,
    "internal": 500,
}
JSON = "application/json"


def response(failure: Failure, where: str = "body") -> Response:
    """A failure's HTTP answer: 422s name the field under ``where`` (``body``, ``query``),
    others say why; 503s carry ``Retry-After``."""
    if failure.kind == "invalid":
        loc: list[str | int] = [where, *(failure.field or "body").split(".")]
        if loc[1] == where:
            loc = loc[1:]
        message = failure.message
        if failure.field and message.startswith(f"{failure.field}: "):
            message = message[len(failure.field) + 2 :]
        body = ErrorBody([ErrorDetail(loc, message, "value_error")])
    else:
        body = ErrorBody(failure.message)
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else None
    return Response(json_body(body), STATUS[failure.kind], headers, media_type=JSON)


async def api_error(_request: Request, exc: Exception) -> Response:
    """The handler for ``ApiError`` raised in a route (a body the front refused)."""
    return response(exc.failure() if isinstance(exc, ApiError) else Failure("internal", str(exc)))
