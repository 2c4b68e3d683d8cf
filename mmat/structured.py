"""Structured outputs for model servers: send the signature's JSON schema as ``response_format``.

DSPy only sends a schema to models litellm's table says take one; a vLLM, SGLang, llama.cpp or
``transformers serve`` model (``hosted_vllm/...``, ``openai/<served name>``) is unknown there, so its
replies were never constrained. ``structured_output`` (a setting, per role or per model string in
``structured_output_for``) decides what each server/API model gets:

- ``json_schema``: the output fields' JSON schema, adjusted to the provider (``adjust_schema``);
- ``json_object``: JSON mode, no schema;
- ``off``: DSPy's ChatAdapter text format (with its own JSON fallback);
- ``auto``: json_schema when litellm knows the model takes one, else one tiny probe call per
  (api_base, model) tries json_schema, then json_object; the answer is cached under the home
  (``cache/structured_output.json``) so later runs do not probe again.

Local (``local/``) models are always schema-constrained by their own provider and dummy models speak
the ChatAdapter format: neither is affected.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import weakref
from pathlib import Path
from typing import Any

import dspy

from mmat.config import Settings, load_settings

__all__ = ["remember", "resolved", "resolved_models", "remember_models", "forget", "StructuredAdapter", "adjust_schema", "configured_mode", "resolve_mode", "probe_mode", "cached_modes",
           "PROBE_SCHEMA", "CACHE_FILE"]

log = logging.getLogger(__name__)

CACHE_FILE = "structured_output.json"
PROBE_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                "additionalProperties": False}
_PROBE_MESSAGES = [{"role": "user", "content": 'Reply with a JSON object {"answer": "yes"}.'}]
# OpenAI's strict mode refuses these keywords (length bounds included); servers that compile the schema
# to a grammar (vLLM, SGLang, llama.cpp) honour them, so they keep them.
_OPENAI_UNSUPPORTED = {"minLength", "maxLength", "default", "examples", "minProperties", "maxProperties",
                       "patternProperties", "unevaluatedProperties", "propertyNames", "contentEncoding",
                       "contentMediaType", "if", "then", "else", "not", "dependentRequired", "dependentSchemas"}

_lock = threading.Lock()
_modes: dict[str, str] = {}  # "<api_base>|<model>" -> json_schema | json_object | off
_by_model: dict[str, tuple[str, str, str | None]] = {}  # model -> (mode, provider, api_base) last resolved


def remember(model: str, mode: str, provider: str, api_base: str | None) -> None:
    """Note the mode a run's preflight resolved for ``model``: adapters built later without settings use it."""
    with _lock:
        _by_model[model] = (mode, provider, api_base)


def resolved(model: str) -> tuple[str, str, str | None] | None:
    with _lock:
        return _by_model.get(model)


def resolved_models() -> dict[str, tuple[str, str, str | None]]:
    """Everything ``remember`` noted in this process (a synth driver hands it to its worker processes)."""
    with _lock:
        return dict(_by_model)


def remember_models(models: dict[str, tuple[str, str, str | None]]) -> None:
    """``remember`` each of another process's ``resolved_models()`` (a synth worker, from its driver)."""
    with _lock:
        _by_model.update({model: tuple(found) for model, found in models.items()})


def forget() -> None:
    """Drop what this process resolved or probed (tests; a server restarted with other options)."""
    with _lock:
        _by_model.clear()
        _modes.clear()


def _is_openai_api(provider: str, api_base: str | None) -> bool:
    return provider == "openai" and not api_base


def adjust_schema(schema: dict[str, Any], provider: str, api_base: str | None = None) -> dict[str, Any]:
    """A copy of ``schema`` the provider accepts. OpenAI's own API (strict mode): every object lists all its
    properties as required, ``additionalProperties: false``, no keyword strict mode refuses. Servers: every
    object still closed and complete (so replies carry every field), length bounds kept."""
    strict = _is_openai_api(provider, api_base)
    out = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if strict:
            for key in _OPENAI_UNSUPPORTED & node.keys():
                del node[key]
        if node.get("type") == "object" or "properties" in node:
            props = node.setdefault("properties", {})
            node["required"] = list(props)
            node["additionalProperties"] = False
        for key, value in list(node.items()):
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for sub in value.values():
                    visit(sub)
            elif isinstance(value, (dict, list)):
                visit(value)

    visit(out)
    return out


_schemas: weakref.WeakKeyDictionary[Any, dict[str, Any] | None] = weakref.WeakKeyDictionary()
_schemas_lock = threading.Lock()


def _signature_schema(signature: Any) -> dict[str, Any] | None:
    """The JSON schema of ``signature``'s outputs (a copy), made once per signature class: DSPy builds a
    pydantic model to derive it, which cost more CPU than the rest of formatting a request."""
    try:
        with _schemas_lock:
            known = signature in _schemas
            schema = _schemas.get(signature)
    except TypeError:  # not weak-referenceable: nothing kept
        return _make_signature_schema(signature)
    if not known:
        schema = _make_signature_schema(signature)
        with _schemas_lock:
            _schemas[signature] = schema
    return copy.deepcopy(schema)


def _make_signature_schema(signature: Any) -> dict[str, Any] | None:
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format, _has_open_ended_mapping

    if _has_open_ended_mapping(signature):
        return None
    try:
        return _get_structured_outputs_response_format(signature, use_native_function_calling=False).model_json_schema()
    except Exception as e:  # a field type pydantic cannot describe: JSON mode still helps
        log.info("no JSON schema for %s (%s): JSON mode instead", getattr(signature, "__name__", signature), e)
        return None


class StructuredAdapter(dspy.JSONAdapter):
    """DSPy's JSONAdapter that sends the response_format mmat chose, whatever DSPy's capability table says."""

    def __init__(self, mode: str, provider: str, api_base: str | None = None):
        super().__init__(use_native_function_calling=False)
        self.mode, self.provider, self.api_base = mode, provider, api_base

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        if "response_format" in lm_kwargs:
            return
        schema = _signature_schema(signature) if self.mode == "json_schema" else None
        if schema is None:
            lm_kwargs["response_format"] = {"type": "json_object"}
            return
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in getattr(signature, "__name__", "outputs"))[:64]
        json_schema = {"name": name or "outputs", "schema": adjust_schema(schema, self.provider, self.api_base)}
        if _is_openai_api(self.provider, self.api_base):
            json_schema["strict"] = True
        lm_kwargs["response_format"] = {"type": "json_schema", "json_schema": json_schema}


# --- choosing a mode ------------------------------------------------------------------------------------
def configured_mode(model: str, settings: Settings, role: str | None = None) -> str:
    """The setting that applies to ``model`` (as ``role``): a model-string entry, else a role entry, else
    ``structured_output``."""
    per = settings.structured_output_for
    if model in per:
        return per[model]
    if role is None:
        from mmat.preflight import roles_for

        role = next((r for r in roles_for(model, settings) if r in per), None)
    if role is not None and role in per:
        return per[role]
    return settings.structured_output


def _key(model: str, api_base: str | None) -> str:
    return f"{api_base or ''}|{model}"


def _cache_path(settings: Settings) -> Path:
    return settings.cache_dir / CACHE_FILE


def _read_cache(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(_cache_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(settings: Settings, key: str, mode: str) -> None:
    path = _cache_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(settings)
        data[key] = mode
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as e:  # a read-only home: the probe is repeated next run, nothing else changes
        log.warning("cannot cache the structured-output probe in %s: %s", path, e)


def cached_modes(settings: Settings) -> dict[str, str]:
    """Probe results known so far ("<api_base>|<model>" -> mode), this process's and the home's."""
    with _lock:
        return {**_read_cache(settings), **_modes}


def _provider_and_base(model: str, settings: Settings) -> tuple[str, str | None]:
    from mmat.lm import _api_base_for, provider_of

    provider = provider_of(model)
    return provider, _api_base_for(provider, settings, {})


def probe_mode(model: str, settings: Settings) -> str:
    """One tiny call with a JSON schema, then (refused) one in JSON mode: the first the server answers with
    a JSON object is the mode; ``off`` if neither. Transient failures propagate (nothing is cached)."""
    from dspy.utils.exceptions import LMInvalidRequestError, LMUnsupportedFeatureError

    from mmat.lm import build_lm

    provider, api_base = _provider_and_base(model, settings)
    lm = build_lm(model, settings=settings, cache=False, temperature=0.0, max_tokens=32, num_retries=1)
    formats = {
        "json_schema": {"type": "json_schema", "json_schema": {"name": "probe", "schema": adjust_schema(PROBE_SCHEMA, provider, api_base)}},
        "json_object": {"type": "json_object"},
    }
    for mode, response_format in formats.items():
        try:
            outputs = lm(messages=_PROBE_MESSAGES, response_format=response_format)
        except (LMInvalidRequestError, LMUnsupportedFeatureError) as e:
            log.info("%s refused response_format %s: %s", model, mode, e)
            continue
        text = outputs[0] if outputs else ""
        text = text.get("text", "") if isinstance(text, dict) else str(text or "")
        try:
            reply = json.loads(text)
        except ValueError:
            continue
        if isinstance(reply, dict) and (mode == "json_object" or "answer" in reply):
            return mode
    return "off"


def resolve_mode(model: str, settings: Settings | None = None, role: str | None = None, *, fresh: bool = False) -> str:
    """The concrete mode (json_schema | json_object | off) for a server/API model; ``native`` for models
    whose provider declares it (``mmat.lm.capabilities``: local and scripted models are not sent a
    response_format by mmat). ``auto`` probes once (cached)."""
    from mmat.lm import capabilities

    settings = settings or load_settings()
    if capabilities(model, settings).native_structured:
        return "native"
    mode = configured_mode(model, settings, role)
    if mode != "auto":
        return mode
    provider, api_base = _provider_and_base(model, settings)
    if not api_base:
        import litellm

        try:
            if litellm.supports_response_schema(model=model):
                return "json_schema"
        except Exception:  # litellm does not know the model: probe it like a server
            pass
    key = _key(model, api_base)
    if not fresh:
        with _lock:
            known = _modes.get(key) or _read_cache(settings).get(key)
        if known in ("json_schema", "json_object", "off"):
            with _lock:
                _modes[key] = known
            return known
    found = probe_mode(model, settings)
    with _lock:
        _modes[key] = found
    _write_cache(settings, key, found)
    return found
