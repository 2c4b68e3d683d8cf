"""One chat completion from a loaded local model, optionally constrained to a JSON schema.

Constrained decoding is what makes a 135M model usable by DSPy: unconstrained it produced no
parseable output in 10 of 10 tries; under an xgrammar JSON-schema grammar every answer parses.
The grammar is compiled once per (model, schema) and cached; the logits processor is single-use,
so each call builds a new one. Sampling (temperature ~0.7) rather than greedy: greedy decoding under
a grammar tends to loop on the same token until the length limit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel

from mmat.local.loader import LoadedModel
from mmat.local.messages import load_image
from mmat.local.schema import MAX_ARRAY_ITEMS, MAX_STRING_LENGTH, bound_schema, schema_key

__all__ = ["Generation", "generate", "compiled_grammar", "render_prompt", "torch_threads", "DEFAULT_TEMPERATURE", "LOCAL_THREADS_ENV"]

DEFAULT_TEMPERATURE = 0.7
# Decoding a small model is latency-bound: on 2 busy cores 1 torch thread gave 31 tokens/s where 2 gave
# 6-8 (threads spin waiting for each other). MMAT_LOCAL_THREADS overrides; 0 keeps torch's setting.
LOCAL_THREADS_ENV = "MMAT_LOCAL_THREADS"
_COMPILE_LOCK = threading.Lock()


class Generation(BaseModel):
    """What one generate() call produced, with the counts litellm's usage needs."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    seconds: float


def _stop_token_ids(loaded: LoadedModel) -> list[int]:
    ids: set[int] = set()
    eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    for value in eos if isinstance(eos, list) else [eos]:
        if isinstance(value, int):
            ids.add(value)
    if isinstance(loaded.tokenizer.eos_token_id, int):
        ids.add(loaded.tokenizer.eos_token_id)
    return sorted(ids)


def _vocab_size(loaded: LoadedModel) -> int:
    head = loaded.model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else len(loaded.tokenizer)


def compiled_grammar(loaded: LoadedModel, schema: dict[str, Any]) -> Any:
    """The xgrammar grammar for ``schema`` (already bounded) on this model's tokenizer, cached by hash."""
    key = schema_key(schema)
    grammar = loaded.grammars.get(key)
    if grammar is not None:
        return grammar
    import xgrammar as xgr

    with _COMPILE_LOCK:
        if loaded.grammar_compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(loaded.tokenizer, vocab_size=_vocab_size(loaded), stop_token_ids=_stop_token_ids(loaded))
            loaded.grammar_compiler = xgr.GrammarCompiler(info)
        grammar = loaded.grammars.get(key)
        if grammar is None:
            grammar = loaded.grammar_compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
            loaded.grammars[key] = grammar
    return grammar


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Run torch ops with ``n`` intra-op threads (default: $MMAT_LOCAL_THREADS or 1), then restore."""
    import torch

    n = int(os.environ.get(LOCAL_THREADS_ENV, "1")) if n is None else n
    previous = torch.get_num_threads()
    if n <= 0 or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fallback_template(messages: list[dict[str, Any]]) -> str:
    # Models saved without a chat template (tiny test models, some bases): a plain role-prefixed transcript.
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant: "


def render_prompt(loaded: LoadedModel, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Model inputs (``input_ids``, ``attention_mask``, pixel tensors for vision models) for a chat."""
    if loaded.vision:
        return _render_vision(loaded, messages)
    tok = loaded.tokenizer
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = _fallback_template(messages)
    return dict(tok(text, return_tensors="pt", add_special_tokens=False))


def _render_vision(loaded: LoadedModel, messages: list[dict[str, Any]]) -> dict[str, Any]:
    from mmat.local.messages import image_to_text

    hf_messages, images = [], []
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        hf_parts = []
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "image_url":
                try:
                    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                    images.append(load_image(url).convert("RGB"))
                    hf_parts.append({"type": "image"})
                except (OSError, ValueError, KeyError, TypeError):
                    hf_parts.append({"type": "text", "text": image_to_text(part)})
            elif isinstance(part, dict):
                hf_parts.append({"type": "text", "text": str(part.get("text", ""))})
            else:
                hf_parts.append({"type": "text", "text": str(part)})
        hf_messages.append({"role": message.get("role", "user"), "content": hf_parts})
    proc = loaded.processor
    text = proc.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
    return dict(proc(text=[text], images=[images] if images else None, return_tensors="pt"))


def generate(
    loaded: LoadedModel,
    messages: list[dict[str, Any]],
    *,
    schema: dict[str, Any] | None = None,
    max_new_tokens: int = 1024,
    temperature: float | None = DEFAULT_TEMPERATURE,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    max_string_length: int | None = MAX_STRING_LENGTH,
    max_items: int | None = MAX_ARRAY_ITEMS,
) -> Generation:
    """Generate one assistant turn. ``schema`` (a JSON schema) constrains the output to JSON matching it,
    after capping its strings and arrays (see ``mmat.local.schema``; None leaves that bound off)."""
    import torch
    import xgrammar as xgr

    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    grammar = None
    if schema is not None:
        grammar = compiled_grammar(loaded, bound_schema(schema, max_length=max_string_length, max_items=max_items))
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p if top_p is not None else 1.0)
    if stop and grammar is None:
        kwargs.update(stop_strings=list(stop), tokenizer=loaded.tokenizer)
    stops = _stop_token_ids(loaded)
    kwargs["eos_token_id"] = stops
    kwargs["pad_token_id"] = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else stops[0]
    with loaded.lock:
        started = time.perf_counter()
        inputs = {k: v.to(loaded.model.device) for k, v in render_prompt(loaded, messages).items()}
        if grammar is not None:
            kwargs["logits_processor"] = [xgr.contrib.hf.LogitsProcessor(grammar)]
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), torch_threads():
            out = loaded.model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - started
    prompt_len = inputs["input_ids"].shape[1]
    new = out[0, prompt_len:].tolist()
    finished = bool(new) and new[-1] in stops
    text = loaded.tokenizer.decode(new[:-1] if finished else new, skip_special_tokens=True)
    if stop and grammar is None:
        cut = [text.find(s) for s in stop if s in text]
        if cut:
            text, finished = text[: min(cut)], True
    return Generation(
        text=text,
        prompt_tokens=int(prompt_len),
        completion_tokens=len(new),
        finish_reason="stop" if finished else "length",
        seconds=seconds,
    )
