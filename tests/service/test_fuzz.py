"""Property-based fuzzing of the running service from its own OpenAPI document (schemathesis):
over 1,000 generated requests, none may get a 5xx, and every response must match the
documented status codes and schemas."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.support.servers import Server

pytestmark = pytest.mark.slow
TAKE_INPUT = (
    "POST /v1/recommend",
    "GET /v1/items/{item_id}/similar",
    "POST /v1/items/{item_id}/similar",
)
CASES_PER_OPERATION = 300  # per mode; /healthz, /readyz and /metrics take no input


@pytest.fixture(scope="module")
def fuzzed(tiny_bundle):
    with Server(
        tiny_bundle, WALRUS_LOG_LEVEL="warning", WALRUS_ENGINE__QUERY_CACHE_SIZE="100"
    ) as srv:
        srv.wait()
        yield srv


def test_no_input_gets_a_5xx_and_every_answer_matches_the_schema(fuzzed):
    """Each operation of the OpenAPI document gets its own generated cases (hypothesis,
    derandomised), valid ones and invalid ones; ``validate_response`` runs schemathesis's
    checks: no 5xx, valid input accepted and invalid input refused, documented status codes,
    content types and response schemas."""
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    calls: dict[tuple[str, str], list[int]] = {}
    current = [("", "")]  # the operation and mode being fuzzed
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for result in schema.get_all_operations():
            operation = result.ok()
            if mode == GenerationMode.NEGATIVE and operation.label not in TAKE_INPUT:
                continue  # nothing to get wrong
            current[0] = (operation.label, mode.value)
            calls[current[0]] = []

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=CASES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def fuzz(case):  # type: ignore[no-untyped-def]
                response = case.call()
                calls[current[0]].append(response.status_code)
                assert response.status_code < 500, (str(case.body)[:300], response.text[:300])
                if response.status_code == 413:  # documented; schemathesis expects 400/422
                    assert len(json.dumps(case.body)) > 60_000
                    return
                case.validate_response(response)

            fuzz()
    total = sum(len(statuses) for statuses in calls.values())
    assert total >= 1000, {key: len(statuses) for key, statuses in calls.items()}
    assert set(calls[("POST /v1/recommend", "positive")]) == {200}
    refused = set(calls[("POST /v1/recommend", "negative")])
    assert 422 in refused and refused <= {400, 413, 422}, refused
