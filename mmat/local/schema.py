"""JSON schemas for constrained decoding: find them in a request, and bound them.

A small model under a grammar never "decides" to stop a string or a list: without ``maxLength`` /
``maxItems`` it runs on to the token limit and the JSON never closes. Bounding every string and array
(including those under ``$defs``) keeps each answer short enough to finish.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

__all__ = ["extract_schema", "bound_schema", "with_patterns", "schema_key", "MAX_STRING_LENGTH", "MAX_ARRAY_ITEMS", "JSON_OBJECT_SCHEMA"]

MAX_STRING_LENGTH = 400  # characters per string value
MAX_ARRAY_ITEMS = 8  # items per array value

# "json_object" mode asks for any JSON object; an open object schema says exactly that to the compiler.
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def extract_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for, in either shape DSPy sends; None for plain text.

    - litellm custom provider: ``{"type": "json_schema", "json_schema": {"schema": {...}, "name": ...}}``
    - DSPy engine route: ``{"type": "json_schema", "schema": {...}}``
    - ``{"type": "json_object"}``: any JSON object.
    - a pydantic model class (litellm passes classes through in some paths).
    """
    if response_format is None:
        return None
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema()
    if not isinstance(response_format, dict):
        raise TypeError(f"response_format must be a dict or a pydantic model class, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "json_object":
        return dict(JSON_OBJECT_SCHEMA)
    if kind == "text" or kind is None and not response_format:
        return None
    nested = response_format.get("json_schema")
    if isinstance(nested, dict):
        schema = nested.get("schema", nested.get("schema_"))
        if isinstance(schema, dict):
            return schema
    schema = response_format.get("schema")
    if isinstance(schema, dict):
        return schema
    if kind == "json_schema":
        raise ValueError("response_format of type json_schema carries no schema (expected json_schema.schema or schema)")
    return None


def _has_type(node: dict[str, Any], name: str) -> bool:
    t = node.get("type")
    return t == name or (isinstance(t, list) and name in t)


def _bound_node(node: Any, max_length: int | None, max_items: int | None) -> None:
    if isinstance(node, list):
        for item in node:
            _bound_node(item, max_length, max_items)
        return
    if not isinstance(node, dict):
        return
    fixed = "enum" in node or "const" in node or "pattern" in node  # a pattern bounds itself (xgrammar drops maxLength beside it)
    if max_length is not None and _has_type(node, "string") and not fixed:
        floor = node.get("minLength", 0)
        node["maxLength"] = max(min(node.get("maxLength", max_length), max_length), floor)
    if max_items is not None and (_has_type(node, "array") or ("items" in node and "type" not in node)):
        floor = node.get("minItems", 0)
        node["maxItems"] = max(min(node.get("maxItems", max_items), max_items), floor)
    for key, value in node.items():
        if key in ("enum", "const", "default", "examples", "required"):
            continue  # data, not sub-schemas
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            if isinstance(value, dict):
                for sub in value.values():
                    _bound_node(sub, max_length, max_items)
            continue
        _bound_node(value, max_length, max_items)


def bound_schema(
    schema: dict[str, Any], *, max_length: int | None = MAX_STRING_LENGTH, max_items: int | None = MAX_ARRAY_ITEMS
) -> dict[str, Any]:
    """A copy of ``schema`` where every string has ``maxLength`` <= max_length and every array ``maxItems``
    <= max_items (existing tighter bounds are kept; a larger ``minLength``/``minItems`` wins over the cap;
    None leaves that kind unbounded)."""
    bounded = copy.deepcopy(schema)
    _bound_node(bounded, max_length, max_items)
    return bounded


def with_patterns(schema: dict[str, Any], patterns: dict[str, str]) -> dict[str, Any]:
    """A copy of ``schema`` whose top-level string properties named in ``patterns`` must match their regex."""
    patterned = copy.deepcopy(schema)
    props = patterned.get("properties") or {}
    for name, regex in patterns.items():
        if name not in props or not _has_type(props[name], "string"):
            raise ValueError(f"no string field {name!r} in the response schema to constrain (fields: {sorted(props)})")
        props[name] = {k: v for k, v in props[name].items() if k not in ("maxLength", "minLength")} | {"pattern": regex}
    return patterned


def schema_key(schema: dict[str, Any]) -> str:
    """Stable hash of a schema: the compiled-grammar cache key."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
