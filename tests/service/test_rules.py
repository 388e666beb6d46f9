"""Filters, pages, diversity and explanations through a real service (uvicorn, the engine
behind a front): every answer checked against the bundle's own attributes; bad filters are
422s naming the field; the OpenAPI document lists the bundle's fields."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import numpy as np
import pytest

from export.runtime import LoadOptions, load_bundle
from tests.support.servers import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_bundle):
    with Server(tiny_bundle) as srv:
        srv.wait()
        yield srv, load_bundle(tiny_bundle, LoadOptions("cpu"))


def post(srv, body, path="/v1/recommend"):
    return httpx.post(f"{srv.url}{path}", json=body, timeout=30)


def passing(bundle, spec) -> set[str]:
    """The item ids a filter lets through, by brute force over the bundle's columns (the
    operators these tests use: numeric bounds, boolean eq, categorical not_in)."""
    cols = bundle.attributes.columns
    checks = {
        "gte": lambda col, i, v: col.numbers[i] >= v,
        "lt": lambda col, i, v: col.numbers[i] < v,
        "eq": lambda col, i, v: col.codes[i] == int(v),
        "not_in": lambda col, i, v: col.codes[i] < 0 or col.values[col.codes[i]] not in v,
    }
    return {
        item
        for i, item in enumerate(bundle.items.ids)
        if all(
            checks[op](cols[field], i, value)
            for field, cond in spec.items()
            for op, value in cond.items()
        )
    }


SPEC = {"year": {"gte": 1970, "lt": 2010}, "in_stock": {"eq": True}, "topic": {"not_in": ["space"]}}


def test_filtered_answers_hold_only_passing_items_and_exactly_k(served):
    srv, bundle = served
    allowed = passing(bundle, SPEC)
    user = bundle.users.ids[0]
    for body in (
        {"user_id": user, "k": 10, "filter": SPEC},
        {"query": "space robots", "k": 10, "filter": SPEC},
        {"k": 10, "filter": SPEC},
        {"history": list(bundle.items.ids[:3]), "k": 10, "filter": SPEC},
    ):
        r = post(srv, body)
        assert r.status_code == 200, r.text
        got = [i["item_id"] for i in r.json()["items"]]
        assert len(got) == 10 and set(got) <= allowed, body


def test_fewer_pass_than_k_all_of_them_with_a_warning(served):
    srv, bundle = served
    few = list(bundle.items.ids[5:9])
    r = post(srv, {"query": "anything", "k": 10, "filter": {"item_id": {"in": few}}})
    assert r.status_code == 200
    assert sorted(i["item_id"] for i in r.json()["items"]) == sorted(few)
    assert any("4 items pass" in w for w in r.json()["warnings"])
    similar = post(
        srv, {"k": 10, "filter": {"item_id": {"in": few}}}, f"/v1/items/{few[0]}/similar"
    )
    assert sorted(i["item_id"] for i in similar.json()["items"]) == sorted(few[1:])
    assert any("3 items pass" in w for w in similar.json()["warnings"])


def test_no_filtered_item_under_concurrent_load(served):
    """Requests with different filters batched together: each answer keeps to its own."""
    srv, bundle = served
    years = [(1950 + 5 * i, 1960 + 5 * i) for i in range(12)]

    def ask(bounds):
        spec = {"year": {"gte": bounds[0], "lt": bounds[1]}}
        r = post(srv, {"user_id": bundle.users.ids[1], "k": 5, "filter": spec})
        return spec, r

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        for spec, r in pool.map(ask, years * 4):
            assert r.status_code == 200
            assert {i["item_id"] for i in r.json()["items"]} <= passing(bundle, spec)


def test_pages_concatenate_to_the_larger_request(served):
    srv, bundle = served
    body = {"user_id": bundle.users.ids[2], "filter": {"in_stock": {"eq": True}}}
    pages = [post(srv, {**body, "k": 8, "offset": o}).json()["items"] for o in (0, 8, 16, 24)]
    whole = post(srv, {**body, "k": 32}).json()["items"]
    flat = [i["item_id"] for page in pages for i in page]
    assert flat == [i["item_id"] for i in whole] and len(set(flat)) == 32
    similar = f"/v1/items/{bundle.items.ids[0]}/similar"
    a = post(srv, {"k": 6, "offset": 0}, similar).json()["items"]
    b = post(srv, {"k": 6, "offset": 6}, similar).json()["items"]
    both = post(srv, {"k": 12}, similar).json()["items"]
    assert [i["item_id"] for i in a + b] == [i["item_id"] for i in both]
    got = httpx.get(f"{srv.url}{similar}", params={"k": 6, "offset": 6}).json()["items"]
    assert got == b


def test_diversity_caps_each_value(served):
    srv, bundle = served
    topic = bundle.attributes.columns["topic"]
    body = {
        "user_id": bundle.users.ids[3],
        "k": 8,
        "diversity": {"field": "topic", "max_per_value": 1},
    }
    items = post(srv, body).json()["items"]
    codes = [topic.codes[bundle.items.index(i["item_id"])] for i in items]
    assert len(items) == min(8, len(topic.values)) and len(set(codes)) == len(codes)
    similar = f"/v1/items/{bundle.items.ids[0]}/similar"
    r = post(
        srv, {"k": 5, "diversity": {"mmr": 0.5}, "filter": {"in_stock": {"eq": False}}}, similar
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 5
    assert {i["item_id"] for i in r.json()["items"]} <= passing(bundle, {"in_stock": {"eq": False}})


def test_explanations_add_up(served):
    srv, bundle = served
    history = list(bundle.items.ids[10:16])
    r = post(srv, {"history": history, "k": 5, "explain": True})
    assert r.status_code == 200
    for item in r.json()["items"]:
        e = item["explanation"]
        assert e["head_score"] == item["score"] and e["sources"] == item["sources"]
        terms = sum(c["score"] for c in e["because"]) + e["other_terms"]
        assert abs(terms + e["rest"] - e["wals_score"]) < 1e-5
        assert abs(e["rest"]) < 1e-4 * max(1.0, abs(e["wals_score"]))  # folded in: exact
        assert {c["item_id"] for c in e["because"]} <= set(history)
    plain = post(srv, {"history": history, "k": 5}).json()["items"]
    assert "explanation" not in plain[0]
    assert [i["item_id"] for i in plain] == [i["item_id"] for i in r.json()["items"]]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"filter": {"colour": {"eq": "red"}}}, ["body", "filter", "colour"]),
        ({"filter": {"year": {"any": ["x"]}}}, ["body", "filter", "year", "any"]),
        ({"filter": {"year": {"gte": "1990"}}}, ["body", "filter", "year", "gte"]),
        ({"filter": {"year": {"between": [1, 2]}}}, ["body", "filter", "year", "between"]),
        ({"filter": {"topic": {}}}, ["body", "filter", "topic"]),
        ({"filter": {"in_stock": {"eq": "yes"}}}, ["body", "filter", "in_stock", "eq"]),
        ({"diversity": {"field": "year", "max_per_value": 2}}, ["body", "diversity", "field"]),
        ({"diversity": {"field": "topic"}}, ["body", "diversity"]),
        ({"offset": -1}, ["body", "offset"]),
        ({"offset": 5000}, ["body", "offset"]),
    ],
)
def test_a_bad_rule_is_a_422_naming_it(served, body, where):
    srv, _ = served
    r = post(srv, {"k": 5, **body})
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(loc[: len(where)] == where for loc in locs), locs


def test_the_openapi_document_lists_the_bundle_s_fields(served):
    srv, bundle = served
    doc = httpx.get(f"{srv.url}/openapi.json").json()
    field = doc["components"]["schemas"]["RecommendRequest"]["properties"]["filter"]
    assert field["x-walrus-attributes"] == bundle.attributes.schema()
    assert "topic (categorical)" in field["description"]
    ready = httpx.get(f"{srv.url}/readyz").json()
    assert ready["attributes"] == {
        "topic": "categorical",
        "year": "numeric",
        "price": "numeric",
        "in_stock": "boolean",
    }
    assert httpx.get(f"{srv.url}/docs").status_code == 200
    assert json.dumps(doc)  # served whole
    assert np.isfinite(
        doc["components"]["schemas"]["RecommendRequest"]["properties"]["offset"]["maximum"]
    )
