"""The floor a front is measured against: a trivial async FastAPI endpoint, served by the same
uvicorn (uvloop, httptools, one worker, no access log) as a walrus front.

    uvicorn bench.trivial:app --port 8002 --log-level warning --no-access-log
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
