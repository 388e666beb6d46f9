"""The OpenAPI document, generated from the public types: the deployment's limits in it are
the ones the service enforces, and the operators it documents per kind are exactly the ones
the core's filters take."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from models.core.attributes import Column, FilterError, ItemAttributes
from models.core.operators import OPERATORS
from service.api import LIMITS, InvalidInput, RecommendRequest, check, decode
from service.front.document import components, condition_schema, with_attributes, with_limits
from service.settings import Settings

VALUES = {"categorical": "a", "tags": "x", "boolean": True, "numeric": 1.5}
ATTRIBUTES = ItemAttributes(
    3,
    [
        Column("topic", "categorical", ["a", "b"], codes=np.array([0, 1, -1], np.int32)),
        Column("tags", "tags", ["x"], indptr=np.array([0, 1, 1, 1]), indices=np.array([0])),
        Column("in_stock", "boolean", codes=np.array([1, 0, -1], np.int8)),
        Column("year", "numeric", numbers=np.array([1.0, 2.0, np.nan])),
    ],
)
FIELD = {"categorical": "topic", "tags": "tags", "boolean": "in_stock", "numeric": "year"}


def value_for(kind: str, op: str) -> object:
    many = condition_schema(kind)["properties"][op].get("type") == "array"
    return [VALUES[kind]] if many else VALUES[kind]


@pytest.mark.parametrize("kind", list(FIELD))
def test_each_documented_operator_is_one_the_core_takes(kind):
    documented = set(condition_schema(kind)["properties"])
    assert documented == set(OPERATORS[kind])
    for op in documented:
        spec = {FIELD[kind]: {op: value_for(kind, op)}}
        jsonschema.validate(spec[FIELD[kind]], condition_schema(kind))
        assert ATTRIBUTES.mask(spec) is not None
    for op in {o for ops in OPERATORS.values() for o in ops} - documented:
        with pytest.raises(FilterError):
            ATTRIBUTES.mask({FIELD[kind]: {op: value_for_any(op)}})


def value_for_any(op: str) -> object:
    return ["a"] if op in ("in", "not_in", "any", "all", "none") else "a"


def test_the_document_s_limits_are_the_ones_enforced():
    settings = Settings(limits={"k": 12, "offset": 30, "query_chars": 9, "history": 4})
    doc = with_limits({"paths": {}}, settings)
    props = doc["components"]["schemas"]["RecommendRequest"]["properties"]
    assert props["k"]["maximum"] == 12 and props["offset"]["maximum"] == 30
    query = next(b for b in props["query"]["anyOf"] if b.get("type") == "string")
    assert query["maxLength"] == 9
    schema = {**doc["components"]["schemas"]["RecommendRequest"], "components": doc["components"]}
    for limit in LIMITS:
        if limit.field not in props:
            continue
        most = limit.of(settings)
        over: object = most + 1 if limit.keyword == "maximum" else None
        if limit.keyword == "maxLength":
            over = "q" * (most + 1)
        elif limit.keyword == "maxItems":
            over = ["i"] * (most + 1)
        body = {limit.field: over}
        with pytest.raises(jsonschema.ValidationError):  # the document refuses it
            jsonschema.validate(body, schema)
        with pytest.raises(InvalidInput) as refused:  # and so does the service
            check(decode(json.dumps(body).encode(), RecommendRequest), settings)
        assert refused.value.field == limit.field


def test_a_bundle_s_fields_and_caps_are_listed():
    doc = with_attributes(with_limits({"paths": {}}, Settings()), ATTRIBUTES.schema())
    spec = doc["components"]["schemas"]["RecommendRequest"]["properties"]["filter"]
    fields = next(b for b in spec["anyOf"] if b.get("type") == "object")["properties"]
    assert set(fields) == {*FIELD.values(), "item_id"}
    cap = doc["components"]["schemas"]["Diversity"]["properties"]["field"]
    assert next(b for b in cap["anyOf"] if b.get("type") == "string")["enum"] == [
        "topic",
        "in_stock",
    ]
    assert set(components()) <= set(doc["components"]["schemas"])
