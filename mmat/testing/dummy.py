"""DummyLM: a scripted model behind the real litellm provider mechanism (``dummy/<name>``).

Importing this module registers the ``dummy`` provider through ``mmat.lm.register_provider``, the hook
a user's plug-in uses for its own provider (``MMAT_PLUGINS=mmat.testing`` does it in a process a test
did not start). Tests build the same ``dspy.LM`` objects production code builds (``mmat.lm.build_lm("dummy/t")``), so
adapters, DSPy's cache, callbacks and usage accounting all run for real; only the text of the answer
is scripted. The answer is written in the format the request asks for: JSON when a
``response_format`` is sent or the JSONAdapter prompt asks for a JSON object, otherwise ChatAdapter's
``[[ ## field ## ]]`` blocks ending with ``[[ ## completed ## ]]``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

# litellm fetches a remote price map when first imported unless told not to; mmat runs offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm import CustomLLM  # noqa: E402
from litellm.types.utils import Choices, Message, ModelResponse, Usage  # noqa: E402
from pydantic import BaseModel, ConfigDict

from mmat.errors import MmatError
from mmat.lm import ModelCapabilities, register_provider

__all__ = ["DummyLM", "DummyCall", "DummyProvider", "DummyExhaustedError", "get_dummy", "output_fields", "format_json",
           "format_chat", "DUMMY_PREFIX", "DUMMY_CAPABILITIES", "register"]

DUMMY_PREFIX = "dummy/"

_OUTPUT_FIELDS_RE = re.compile(r"Your output fields are:\n(.*?)(?:\n(?:All interactions|In adhering)|\Z)", re.S)
_FIELD_LINE_RE = re.compile(r"^\d+\. `(\w+)`", re.M)
_CHAT_REQUEST_RE = re.compile(r"\[\[ ## (\w+) ## \]\]")
_JSON_PROMPT_MARK = "Respond with a JSON object"

Responder = Callable[..., Mapping[str, Any]]


class DummyExhaustedError(MmatError):
    """A DummyLM was asked for more answers than its script holds."""


class DummyCall(BaseModel):
    """One request a DummyLM received: what the model saw and what it answered."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    messages: list[dict[str, Any]]
    output_fields: list[str]
    format: Literal["json", "chat"]
    response_format: Any = None
    params: dict[str, Any]
    outputs: dict[str, Any]
    text: str


_REGISTRY: dict[str, DummyLM] = {}
_REGISTRY_LOCK = threading.Lock()


def get_dummy(name: str) -> DummyLM:
    """The DummyLM registered under ``name`` (the part after ``dummy/``)."""
    with _REGISTRY_LOCK:
        dummy = _REGISTRY.get(name)
    if dummy is None:
        raise MmatError(f"no DummyLM named {name!r}: create mmat.testing.DummyLM(responses, name={name!r}) before calling dummy/{name}")
    return dummy


class DummyLM:
    """Scripted answers for ``dummy/<name>``.

    ``responses`` is a list of dicts of output-field values, consumed one per LM call (a list runs out
    with ``DummyExhaustedError`` unless ``cycle=True``), or a callable ``f(messages)`` or
    ``f(messages, output_fields)`` returning such a dict. Several DummyLMs coexist by name (teacher vs
    verifier); creating one with an existing name replaces the old one. Every request is recorded in
    ``calls`` (thread-safe).
    """

    def __init__(
        self,
        responses: list[Mapping[str, Any]] | Responder,
        name: str = "default",
        latency_s: float = 0.0,
        *,
        cycle: bool = False,
        supports_response_schema: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"DummyLM name must be a non-empty string without '/', got {name!r}")
        if not callable(responses):
            responses = list(responses)
            if not responses:
                raise ValueError("DummyLM needs at least one scripted response")
            bad = [type(r).__name__ for r in responses if not isinstance(r, Mapping)]
            if bad:
                raise TypeError(f"DummyLM responses must be dicts of output-field values, got {bad[0]}")
        self.responses = responses
        self.name = name
        self.latency_s = latency_s
        self.cycle = cycle
        self.supports_response_schema = supports_response_schema
        self.calls: list[DummyCall] = []
        self._next = 0
        self._lock = threading.Lock()
        from mmat.lm import register_model_info

        # Not configure_litellm(): constructing a fake must not touch MMAT_HOME. The provider itself was
        # registered when this module was imported.
        register_model_info(self.model, supports_response_schema=supports_response_schema)
        with _REGISTRY_LOCK:
            _REGISTRY[name] = self

    @property
    def model(self) -> str:
        """The litellm model string that reaches this DummyLM."""
        return f"{DUMMY_PREFIX}{self.name}"

    @property
    def remaining(self) -> int | None:
        """Scripted answers not yet used (None for a callable or cycling script)."""
        if callable(self.responses) or self.cycle:
            return None
        return len(self.responses) - self._next

    def _outputs_for(self, messages: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
        if callable(self.responses):
            takes_fields = len(inspect.signature(self.responses).parameters) >= 2
            outputs = self.responses(messages, fields) if takes_fields else self.responses(messages)
            if not isinstance(outputs, Mapping):
                raise TypeError(f"DummyLM {self.name!r} responder returned {type(outputs).__name__}, expected a dict")
            return dict(outputs)
        with self._lock:
            if self._next >= len(self.responses):
                if not self.cycle:
                    raise DummyExhaustedError(
                        f"DummyLM {self.name!r} ran out of scripted responses after {len(self.responses)} calls: "
                        "add responses, pass cycle=True, or check why the program made more LM calls"
                    )
                self._next = 0
            outputs = dict(self.responses[self._next])
            self._next += 1
        return outputs

    def answer(self, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> tuple[str, DummyCall]:
        """Format the next scripted answer for this request and record the call."""
        response_format = params.get("response_format")
        fmt: Literal["json", "chat"] = "json" if response_format is not None or _asks_for_json(messages) else "chat"
        fields = output_fields(messages, response_format)
        outputs = self._outputs_for(messages, fields)
        text = format_json(outputs) if fmt == "json" else format_chat(outputs)
        call = DummyCall(
            messages=[dict(m) for m in messages],
            output_fields=fields,
            format=fmt,
            response_format=response_format,
            params={k: v for k, v in params.items() if k != "response_format"},
            outputs=outputs,
            text=text,
        )
        with self._lock:
            self.calls.append(call)
        return text, call


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def _asks_for_json(messages: list[dict[str, Any]]) -> bool:
    users = [m for m in messages if m.get("role") == "user"]
    return bool(users) and _JSON_PROMPT_MARK in _text_of(users[-1])


def output_fields(messages: list[dict[str, Any]], response_format: Any = None) -> list[str]:
    """The output field names a DSPy adapter asked for, in order (schema first, then the prompt)."""
    if isinstance(response_format, Mapping):
        nested = response_format.get("json_schema")
        schema = nested.get("schema") if isinstance(nested, Mapping) else response_format.get("schema")
        if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
            return list(schema["properties"])
    for message in messages:
        if message.get("role") == "system":
            found = _OUTPUT_FIELDS_RE.search(_text_of(message))
            if found:
                return _FIELD_LINE_RE.findall(found.group(1))
    if messages:
        names = _CHAT_REQUEST_RE.findall(_text_of(messages[-1]))
        return [n for n in dict.fromkeys(names) if n != "completed"]
    return []


def _jsonable(value: Any) -> Any:
    from dspy.adapters.utils import serialize_for_json

    return serialize_for_json(value)


def format_json(outputs: Mapping[str, Any]) -> str:
    """JSONAdapter's answer shape: one JSON object of the output fields."""
    return json.dumps({k: _jsonable(v) for k, v in outputs.items()}, indent=2, ensure_ascii=False)


def format_chat(outputs: Mapping[str, Any]) -> str:
    """ChatAdapter's answer shape: ``[[ ## field ## ]]`` blocks, then ``[[ ## completed ## ]]``."""
    blocks = []
    for name, value in outputs.items():
        value = _jsonable(value)
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        blocks.append(f"[[ ## {name} ## ]]\n{text}")
    blocks.append("[[ ## completed ## ]]")
    return "\n\n".join(blocks)


def _token_count(text: str) -> int:
    return len(text.split())


def _messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_text_of(m) for m in messages)


def _respond(dummy: DummyLM, messages: list, params: Mapping[str, Any]) -> ModelResponse:
    text, _call = dummy.answer(messages, params)
    prompt_tokens, completion_tokens = _token_count(_messages_text(messages)), _token_count(text)
    return ModelResponse(
        model=dummy.model,
        created=int(time.time()),
        choices=[Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=text))],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens),
    )


def _name(model: str) -> str:
    return model[len(DUMMY_PREFIX):] if model.startswith(DUMMY_PREFIX) else model


class DummyProvider(CustomLLM):
    """litellm ``CustomLLM`` for ``dummy/<name>``: looks the DummyLM up by name and formats its answer."""

    def completion(self, model: str, messages: list, optional_params: dict | None = None, **_: Any) -> ModelResponse:
        dummy = get_dummy(_name(model))
        if dummy.latency_s:
            time.sleep(dummy.latency_s)
        return _respond(dummy, messages, optional_params or {})

    async def acompletion(self, model: str, messages: list, optional_params: dict | None = None, **_: Any) -> ModelResponse:
        dummy = get_dummy(_name(model))
        if dummy.latency_s:
            await asyncio.sleep(dummy.latency_s)
        return _respond(dummy, messages, optional_params or {})


# Scripted models answer in this process, in whatever format the adapter asks for (ChatAdapter: they
# constrain no decoding), and see images only where a test registers them with litellm (supports_vision).
DUMMY_CAPABILITIES = ModelCapabilities(in_process=True, native_structured=True)


def register() -> None:
    """Register the ``dummy`` provider (done on import; again after a test replaced litellm's provider map)."""
    register_provider(DUMMY_PREFIX.rstrip("/"), DummyProvider(), capabilities=DUMMY_CAPABILITIES)


register()
