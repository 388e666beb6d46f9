"""An inline app whose engine has a planted bug: a request with the query "raise a bug"
raises inside the batch (what a bug deep in the request path looks like). For
tests/service/test_api.py, started as ``uvicorn tests.service.buggy:create_app --factory``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service import inline
from service.engine.recommender import Recommender

TRIGGER = "raise a bug"


def create_app() -> FastAPI:
    served = Recommender.recommend_batch

    def buggy(self: Recommender, reqs: list[Any]) -> list[Any]:
        if any(r.query == TRIGGER for r in reqs):
            raise ZeroDivisionError("a planted bug")
        return served(self, reqs)

    Recommender.recommend_batch = buggy  # type: ignore[method-assign]
    return inline.create_app()
