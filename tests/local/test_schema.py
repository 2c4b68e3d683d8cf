"""Schema extraction (both response_format shapes) and recursive bounding."""

import copy

import pytest
from pydantic import BaseModel

from mmat.local.schema import JSON_OBJECT_SCHEMA, bound_schema, extract_schema, schema_key

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {"$ref": "#/$defs/Spec"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "short": {"type": "string", "maxLength": 10},
        "long_min": {"type": "string", "minLength": 500},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}, "minItems": 12},
    },
    "required": ["spec"],
    "$defs": {"Spec": {"type": "object", "properties": {"query": {"type": "string"}, "tools": {"items": {"type": "string"}}}}},
}


def test_extract_nested_under_json_schema_as_litellm_sends_it():
    rf = {"type": "json_schema", "json_schema": {"schema": SCHEMA, "name": "X", "strict": True}}
    assert extract_schema(rf) is SCHEMA


def test_extract_at_top_level_as_the_dspy_engine_route_sends_it():
    assert extract_schema({"type": "json_schema", "schema": SCHEMA}) is SCHEMA


def test_extract_json_object_none_text_and_pydantic():
    assert extract_schema({"type": "json_object"}) == JSON_OBJECT_SCHEMA
    assert extract_schema(None) is None
    assert extract_schema({"type": "text"}) is None

    class M(BaseModel):
        a: int

    assert extract_schema(M)["properties"]["a"]["type"] == "integer"


def test_extract_rejects_json_schema_without_a_schema():
    with pytest.raises(ValueError, match="carries no schema"):
        extract_schema({"type": "json_schema", "json_schema": {"name": "X"}})


def test_bound_schema_caps_every_string_and_array_including_defs_and_anyof():
    original = copy.deepcopy(SCHEMA)
    b = bound_schema(SCHEMA, max_length=400, max_items=8)
    assert SCHEMA == original  # input untouched
    props = b["properties"]
    assert props["notes"]["maxItems"] == 8 and props["notes"]["items"]["maxLength"] == 400
    assert props["maybe"]["anyOf"][0]["maxLength"] == 400 and "maxLength" not in props["maybe"]["anyOf"][1]
    assert "maxLength" not in props["kind"]  # enums are already bounded
    assert props["short"]["maxLength"] == 10  # a tighter bound is kept
    assert props["long_min"]["maxLength"] == 500  # minLength wins over the cap: still satisfiable
    assert props["matrix"]["maxItems"] == 12 and props["matrix"]["items"]["maxItems"] == 8
    spec = b["$defs"]["Spec"]["properties"]
    assert spec["query"]["maxLength"] == 400
    assert spec["tools"]["maxItems"] == 8  # array without "type" but with "items"
    assert "maxLength" not in b["required"]


def test_bound_schema_none_leaves_that_kind_unbounded():
    b = bound_schema(SCHEMA, max_length=None, max_items=3)
    assert "maxLength" not in b["properties"]["notes"]["items"]
    assert b["properties"]["notes"]["maxItems"] == 3


def test_schema_key_ignores_key_order():
    assert schema_key({"a": 1, "b": [1, 2]}) == schema_key({"b": [1, 2], "a": 1})
    assert schema_key({"a": 1}) != schema_key({"a": 2})


def test_patterns_replace_length_bounds_on_named_string_fields():
    from mmat.local.schema import with_patterns

    schema = {"type": "object", "properties": {"thought": {"type": "string"}, "code": {"type": "string", "maxLength": 50}}}
    patterned = with_patterns(schema, {"code": "^print\\(1\\)$"})
    assert patterned["properties"]["code"] == {"type": "string", "pattern": "^print\\(1\\)$"}
    assert schema["properties"]["code"] == {"type": "string", "maxLength": 50}  # the input is left alone
    bounded = bound_schema(patterned, max_length=10)
    assert "maxLength" not in bounded["properties"]["code"] and bounded["properties"]["thought"]["maxLength"] == 10
    with pytest.raises(ValueError, match="no string field 'answer'"):
        with_patterns(schema, {"answer": "x"})
