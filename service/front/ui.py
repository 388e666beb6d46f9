"""The page at ``/ui``: three static files (HTML, CSS, JavaScript; no build step, nothing
from outside the image) that call the public API like any client. They are read once when
the app is built and sent from memory with the headers a page needs: a content security
policy allowing only its own files (no inline script or style, no other origin, no frames),
``nosniff``, no referrer. The serving path is untouched: the page is not a request to the
engine."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import RedirectResponse

STATIC = Path(__file__).with_name("static")
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def ui_router() -> APIRouter:
    """``/`` and ``/ui`` redirect to ``/ui/``, which serves index.html; ``/ui/<file>`` the
    others. Anything else under /ui is a 404."""
    files = {name: (STATIC / name).read_bytes() for name in TYPES}
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    @router.get("/ui")
    async def to_page() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/{name:path}")
    async def page(name: str) -> Response:
        name = name or "index.html"
        if name not in files:
            raise HTTPException(404, "no such file")
        return Response(files[name], media_type=TYPES[name], headers=HEADERS)

    return router
