"""The OpenAPI document, generated from the public types (``service.api``): their JSON
schemas are its components, the deployment's limits (``service.api.LIMITS``, from
``Settings``) are written into every property and parameter they apply to, and, per
request, the serving bundle's filterable fields are listed with the operators of their
kinds (``models.core.operators``, the table the core's filters apply)."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from models.core.operators import CAPPABLE, ITEM_ID, LIST_OPERATORS, OPERATORS
from service import api
from service.api import BODIES, ID_CHARS, LIMITS, Diversity
from service.settings import Settings

REF = "#/components/schemas/{name}"
EXAMPLES: list[dict[str, Any]] = [
    {"user_id": "u1", "k": 5},
    {"query": "space robots", "k": 5},
    {"user_id": "u1", "query": "space robots", "k": 10, "exclude": ["i3"]},
    {"history": ["i1", "i7"], "k": 5},
    {
        "user_id": "u1",
        "k": 10,
        "offset": 10,
        "filter": {"year": {"gte": 1990, "lt": 2000}, "in_stock": {"eq": True}},
        "diversity": {"field": "topic", "max_per_value": 2},
        "explain": True,
    },
]
VALUES: dict[str, dict[str, Any]] = {
    "categorical": {"type": "string"},
    "tags": {"type": "string"},
    "boolean": {"type": "boolean"},
    "numeric": {"type": "number"},
    ITEM_ID: {"type": "string", "minLength": 1, "maxLength": ID_CHARS},
}
"""The type of one value of each kind of field, as a condition names it."""


def ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def body_doc(kind: type, examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body is ``kind``."""
    media: dict[str, Any] = {"schema": ref(kind)}
    if examples:
        media["examples"] = {f"example {i + 1}": {"value": v} for i, v in enumerate(examples)}
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def result_doc(kind: type, description: str = "The result.") -> dict[str, Any]:
    """A route's response whose JSON body is ``kind``."""
    return {"description": description, "content": {"application/json": {"schema": ref(kind)}}}


def components() -> dict[str, Any]:
    """The public types' JSON schemas; a type's own ``json_schema`` (a rule across its
    fields that its ``__post_init__`` checks) joins its component."""
    _, schemas = msgspec.json.schema_components(BODIES, ref_template=REF)
    for name, schema in schemas.items():  # every component is a type of service.api
        schema.update(getattr(getattr(api, name, None), "json_schema", {}))
    return schemas


def with_limits(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``doc`` with the deployment's limits on every property and parameter they limit."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components())
    targets = [s.get("properties", {}) for s in schemas.values()]
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            params = operation.get("parameters", [])
            targets.append({p["name"]: p["schema"] for p in params if "schema" in p})
    for limit in LIMITS:
        for properties in targets:
            if limit.field in properties:
                for branch in properties[limit.field].get("anyOf", [properties[limit.field]]):
                    if branch.get("type") not in (None, "null"):
                        branch[limit.keyword] = limit.of(settings)
    return doc


def condition_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of one field's condition: the operators its kind takes."""
    value = VALUES[kind]
    many = {"type": "array", "items": value, "minItems": 1}
    return {
        "type": "object",
        "properties": {op: many if op in LIST_OPERATORS else value for op in OPERATORS[kind]},
        "additionalProperties": False,
        "minProperties": 1,
    }


def with_attributes(doc: dict[str, Any], attributes: dict[str, str]) -> dict[str, Any]:
    """A copy of ``doc`` whose request bodies take exactly this bundle's fields: every
    ``filter`` lists each attribute (and ``item_id``) with the operators and value types of
    its kind, and a diversity cap names only fields it can count. A request the document
    allows is then one the engine accepts."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    listed = ", ".join(f"{name} ({kind})" for name, kind in attributes.items()) or "none"
    fields = {name: condition_schema(kind) for name, kind in attributes.items()}
    fields[ITEM_ID] = condition_schema(ITEM_ID)
    for schema in schemas.values():
        spec = schema.get("properties", {}).get("filter")
        if spec is None:
            continue
        spec["description"] = spec.get("description", "") + f" This bundle's fields: {listed}."
        spec["x-walrus-attributes"] = attributes
        for branch in spec.get("anyOf", [spec]):
            if branch.get("type") == "object":
                branch.pop("additionalProperties", None)
                branch.pop("propertyNames", None)
                branch.update(properties=fields, additionalProperties=False)
    cappable = [n for n, kind in attributes.items() if kind in CAPPABLE]
    field = schemas[Diversity.__name__]["properties"]["field"]
    for branch in field.get("anyOf", [field]):
        if branch.get("type") == "string":
            branch["enum"] = cappable
    if not cappable:  # no field to cap: only MMR
        field["anyOf"] = [b for b in field.get("anyOf", []) if b.get("type") == "null"]
    return doc
