"""The ``local`` litellm custom provider: serves ``local/...`` model strings in-process.

Registered in ``litellm.custom_provider_map`` by ``mmat.lm.configure_litellm``, so ``dspy.LM("local/...")``
goes through litellm like any hosted model: DSPy's adapters, cache, callbacks and usage tracking run
unchanged. A ``response_format`` carrying a JSON schema switches on constrained decoding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

# litellm fetches a remote price map when first imported unless told not to; mmat runs offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm import CustomLLM  # noqa: E402
from litellm.types.utils import Choices, Message, ModelResponse, Usage  # noqa: E402

from mmat.config import load_settings
from mmat.local.generate import generate
from mmat.local.loader import get_loaded
from mmat.local.messages import flatten_messages
from mmat.local.registry import LOCAL_PREFIX, LocalModelSpec, resolve_local
from mmat.local.schema import MAX_ARRAY_ITEMS, MAX_STRING_LENGTH, extract_schema, with_patterns

__all__ = [
    "LocalProvider", "DEFAULT_MAX_TOKENS", "HOME_PARAM", "IMAGE_DOWNGRADES_KEY", "MAX_STRING_PARAM", "MAX_ITEMS_PARAM",
    "FIELD_PATTERNS_PARAM",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024  # DSPy sends no max_tokens; ~50 s of CPU generation at most for the 135M model
HOME_PARAM = "mmat_home"  # LM kwarg carrying MMAT_HOME, so the provider finds the converted weights
IMAGE_DOWNGRADES_KEY = "mmat_image_downgrades"  # response._hidden_params[...]: images replaced by text
# Optional LM kwargs that tighten the schema bounds (shorter answers, faster runs): build_lm(..., **{KEY: n}).
MAX_STRING_PARAM = "mmat_max_string_length"
MAX_ITEMS_PARAM = "mmat_max_items"
# Optional per-call kwarg {field: regex}: those string fields of the response schema must match (CodeAgent's
# action grammar for the embedded model). The prompt is untouched; only the decoding is constrained.
FIELD_PATTERNS_PARAM = "mmat_field_patterns"

_warned_downgrade = threading.Event()


class LocalProvider(CustomLLM):
    """litellm ``CustomLLM`` for ``local/<registry name | model dir | adapter dir>``."""

    def __init__(self) -> None:
        super().__init__()
        self._specs: dict[tuple[str, str | None], LocalModelSpec] = {}

    def _spec(self, model: str, home: str | None) -> LocalModelSpec:
        key = (model, home)
        spec = self._specs.get(key)
        if spec is None:
            settings = load_settings(home=Path(home)) if home else load_settings()
            spec = resolve_local(model, settings)
            self._specs[key] = spec
        return spec

    def completion(
        self,
        model: str,
        messages: list,
        model_response: ModelResponse | None = None,
        optional_params: dict | None = None,
        **_: Any,
    ) -> ModelResponse:
        params = dict(optional_params or {})
        name = model[len(LOCAL_PREFIX):] if model.startswith(LOCAL_PREFIX) else model
        loaded = get_loaded(self._spec(name, params.get(HOME_PARAM)))
        schema = extract_schema(params.get("response_format"))
        patterns = params.get(FIELD_PATTERNS_PARAM)
        if schema is not None and schema.get("properties") and patterns:  # not the bare json_object fallback
            schema = with_patterns(schema, patterns)
        downgrades = 0
        if loaded.vision:
            chat = messages
        else:
            flat = flatten_messages(messages)
            chat, downgrades = flat.messages, flat.image_downgrades
            if downgrades and not _warned_downgrade.is_set():
                _warned_downgrade.set()
                log.warning(
                    "local/%s reads text only: %d image(s) were replaced by text descriptions (counted in "
                    "response._hidden_params[%r]); use a vision model for real image input",
                    name, downgrades, IMAGE_DOWNGRADES_KEY,
                )
        stop = params.get("stop")
        generations = [
            generate(
                loaded,
                chat,
                schema=schema,
                max_new_tokens=int(params.get("max_tokens") or params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS),
                temperature=params.get("temperature"),
                top_p=params.get("top_p"),
                seed=params.get("seed"),
                stop=[stop] if isinstance(stop, str) else stop,
                max_string_length=int(params.get(MAX_STRING_PARAM) or MAX_STRING_LENGTH),
                max_items=int(params.get(MAX_ITEMS_PARAM) or MAX_ARRAY_ITEMS),
            )
            for _ in range(int(params.get("n") or 1))
        ]
        response = ModelResponse(
            model=f"{LOCAL_PREFIX}{name}",
            created=int(time.time()),
            choices=[
                Choices(index=i, finish_reason=g.finish_reason, message=Message(role="assistant", content=g.text))
                for i, g in enumerate(generations)
            ],
            usage=Usage(
                prompt_tokens=sum(g.prompt_tokens for g in generations),
                completion_tokens=sum(g.completion_tokens for g in generations),
                total_tokens=sum(g.prompt_tokens + g.completion_tokens for g in generations),
            ),
        )
        response._hidden_params[IMAGE_DOWNGRADES_KEY] = downgrades
        response._hidden_params["mmat_generate_seconds"] = round(sum(g.seconds for g in generations), 3)
        return response

    async def acompletion(self, model: str, messages: list, **kwargs: Any) -> ModelResponse:
        # One CPU model generates one sequence at a time anyway: run the sync path off the event loop.
        return await asyncio.to_thread(self.completion, model, messages, **kwargs)
