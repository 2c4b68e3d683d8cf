"""One conversation (or step pair) -> one row in each consumer's documented layout.

Every layout carries the prompt exactly as the agent saw it: the same system text, the same turns,
images where they were. Nothing is added — in particular no ``tools`` column: the agent's tool list
is already part of its first user turn, and a trainer that renders a ``tools`` column injects a
second, different tool block into the system prompt (and SFT and DPO prompts would then differ).

- LLaMA-Factory ``sharegpt`` (``dataset_info.json``): ``messages`` (user/assistant turns, tool
  observations are user turns as at inference), ``system``, ``images`` (``<image>`` in the text,
  one per image, in order); ranking rows add ``chosen``/``rejected`` assistant messages.
- ms-swift: ``messages`` (system first), ``images``; DPO rows end on the chosen assistant turn and
  add ``rejected_response``.
- TRL (HF datasets): conversational; for VLMs ``content`` is a list of ``{"type": "text"}`` /
  ``{"type": "image"}`` parts in place and ``images`` holds the images in order; text rows have
  string contents and no image column. Preference rows: ``prompt``, ``chosen``, ``rejected``
  (+ ``images``).
- OpenAI: ``{"messages": [...]}`` with ``image_url`` parts; preference rows ``input`` /
  ``preferred_output`` / ``non_preferred_output``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmat.errors import ConfigError

__all__ = ["IMAGE_TOKEN", "image_ref", "flatten_images", "has_images", "sharegpt_row", "swift_row", "trl_messages",
           "openai_messages"]

IMAGE_TOKEN = "<image>"  # the placeholder LLaMA-Factory and ms-swift expect in text content

Ref = Callable[[str], str]


def image_ref(part: dict[str, Any]) -> str:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url:
        raise ConfigError(f"image part without a url: {part!r}")
    return url


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in messages)


def flatten_images(messages: list[dict[str, Any]], ref: Ref = str) -> tuple[list[dict[str, str]], list[str]]:
    """Messages with string contents (each image as IMAGE_TOKEN where it was) and the image refs in that order.

    Parts are concatenated as chat templates concatenate them, with nothing in between: the text
    around an image already holds its own line breaks.
    """
    flat, images = [], []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") == "image_url":
                    images.append(ref(image_ref(part)))
                    texts.append(IMAGE_TOKEN)
                elif part.get("type") == "text":
                    texts.append(part["text"])
                else:
                    raise ConfigError(f"content part of type {part.get('type')!r} has no place in a text export")
            content = "".join(texts)
        flat.append({"role": msg["role"], "content": content or ""})
    return flat, images


def _check_no_literal_placeholder(flat: list[dict[str, str]], n_images: int) -> None:
    found = sum(m["content"].count(IMAGE_TOKEN) for m in flat)
    if found != n_images:  # a model wrote "<image>" in its text: the trainer would miscount the images
        raise ConfigError(f"a turn contains the text {IMAGE_TOKEN!r} itself ({found} placeholders for {n_images} images)")


def _split_system(flat: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    if flat and flat[0]["role"] in ("system", "developer"):
        return flat[0]["content"], flat[1:]
    return "", flat


def _as_user(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Observation turns are user turns for the agent: keep them so (LLaMA-Factory's observation role re-wraps them)."""
    return [{"role": "assistant" if t["role"] == "assistant" else "user", "content": t["content"]} for t in turns]


def sharegpt_row(messages: list[dict[str, Any]], ref: Ref, *, chosen: str | None = None,
                 rejected: str | None = None) -> dict[str, Any]:
    flat, images = flatten_images(messages, ref)
    _check_no_literal_placeholder(flat, len(images))
    system, turns = _split_system(flat)
    row: dict[str, Any] = {"messages": _as_user(turns), "system": system, "images": images}
    if chosen is not None:
        row["chosen"] = {"role": "assistant", "content": chosen}
        row["rejected"] = {"role": "assistant", "content": rejected}
    return row


def swift_row(messages: list[dict[str, Any]], ref: Ref, *, chosen: str | None = None,
              rejected: str | None = None) -> dict[str, Any]:
    flat, images = flatten_images(messages, ref)
    _check_no_literal_placeholder(flat, len(images))
    system, turns = _split_system(flat)
    out = ([{"role": "system", "content": system}] if system else []) + _as_user(turns)
    row: dict[str, Any] = {"messages": out, "images": images}
    if chosen is not None:
        row["messages"] = out + [{"role": "assistant", "content": chosen}]
        row["rejected_response"] = rejected
    return row


def trl_messages(messages: list[dict[str, Any]], ref: Ref, *, vlm: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """TRL conversational messages: parts in place for a VLM (and the image refs in order), strings otherwise."""
    if not vlm:
        flat, images = flatten_images(messages, ref)
        if images:
            raise ConfigError("a text-only dataset cannot hold images: render the rows for a text student (--text)")
        return flat, []
    out, images = [], []
    for msg in messages:
        content = msg.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            for part in content or []:
                if part.get("type") == "image_url":
                    images.append(ref(image_ref(part)))
                    parts.append({"type": "image", "text": None})
                else:
                    parts.append({"type": "text", "text": part.get("text", "")})
        out.append({"role": msg["role"], "content": parts})
    return out, images


def openai_messages(messages: list[dict[str, Any]], ref: Ref) -> list[dict[str, Any]]:
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": ref(image_ref(p))}} if p.get("type") == "image_url" else p
                       for p in content]
        out.append({"role": msg["role"], "content": content})
    return out
