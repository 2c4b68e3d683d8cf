"""OpenAI-format messages -> plain-text chat turns for a text-only local model.

DSPy sends images as ``image_url`` parts. A text model cannot see them, so each image becomes a short
text description (size, mode, dominant colours, caption if one is known). This is a *downgrade* the
caller must be able to see: ``flatten_messages`` counts them, the provider reports the count on the
response and logs a warning once. Fine-tuning a text student renders images with the same function
(``image_to_text``), so training text matches inference text exactly.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from mmat.colors import dominant_colors

__all__ = ["flatten_messages", "image_to_text", "describe_image", "load_image", "image_parts", "FlatMessages"]

_CAPTION_KEYS = ("caption", "Caption", "Description", "description", "ImageDescription", "Comment", "comment")
_EXIF_IMAGE_DESCRIPTION = 0x010E
_MAX_COLOURS = 3  # colours named per image: enough to tell a night sky from a receipt


class FlatMessages(BaseModel):
    """Text-only chat turns (``{"role", "content": str}``) and how many images were replaced by text."""

    messages: list[dict[str, str]]
    image_downgrades: int = 0


def _image_url(part: Mapping[str, Any]) -> str:
    url = part.get("image_url")
    if isinstance(url, Mapping):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError("image part has no url")
    return url


def load_image(url: str) -> Image.Image:
    """Open an image from a data URL, a file:// URL or a local path. Remote URLs are never fetched here."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        raw = base64.b64decode(payload, validate=False) if ";base64" in header else unquote(payload).encode("latin-1")
        image = Image.open(io.BytesIO(raw))
    elif url.startswith(("http://", "https://")):
        raise ValueError("remote image not fetched (local models run offline)")
    else:
        path = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
        image = Image.open(path)
    image.load()
    return image


def _caption_from_metadata(image: Image.Image) -> str | None:
    for key in _CAPTION_KEYS:
        value = image.info.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value.strip():
            return value.strip()
    try:
        value = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    except (AttributeError, OSError, ValueError):
        value = None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _dominant_colours(image: Image.Image) -> list[str]:
    return [f"{name} {round(100 * share)}%" for name, share in dominant_colors(image, _MAX_COLOURS)]


def describe_image(image: Image.Image, caption: str | None = None) -> str:
    """``[image: 640x480, RGB, colors: blue 61%, white 22%, gray 9%; caption: ...]``"""
    text = f"[image: {image.width}x{image.height}, {image.mode}, colors: {', '.join(_dominant_colours(image))}"
    caption = caption or _caption_from_metadata(image)
    if caption:
        text += f"; caption: {' '.join(caption.split())[:300]}"
    return text + "]"


def image_to_text(part: Mapping[str, Any], captions: Mapping[str, str] | None = None) -> str:
    """Text stand-in for one ``{"type": "image_url", ...}`` part. Never raises on a bad image.

    ``captions`` maps an image URL (or path) to a known caption, e.g. from the image pool; a ``caption``
    key on the part itself or caption metadata in the file are used too.
    """
    try:
        url = _image_url(part)
    except ValueError as e:
        return f"[image: unreadable ({e})]"
    caption = part.get("caption") or (captions or {}).get(url)
    try:
        image = load_image(url)
    except (OSError, ValueError, UnidentifiedImageError, binascii.Error, Image.DecompressionBombError) as e:
        shown = url if not url.startswith("data:") else url[:40] + "..."
        why = str(e) or type(e).__name__
        return f"[image: unreadable ({why[:120]}): {shown}" + (f"; caption: {caption}]" if caption else "]")
    with image:
        return describe_image(image, caption)


def image_parts(messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every image part of every message, in order (for models that do see images)."""
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            found.extend(p for p in content if isinstance(p, Mapping) and p.get("type") == "image_url")
    return found


def _part_to_text(part: Any, captions: Mapping[str, str] | None) -> tuple[str, int]:
    if isinstance(part, str):
        return part, 0
    if not isinstance(part, Mapping):
        return str(part), 0
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", "")), 0
    if kind == "image_url":
        return image_to_text(part, captions), 1
    return f"[{kind or 'unknown'} content omitted: the local model reads text only]", 0


def _content_to_text(message: Mapping[str, Any], captions: Mapping[str, str] | None) -> tuple[str, int]:
    content = message.get("content")
    images = 0
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for part in content:
            piece, n = _part_to_text(part, captions)
            pieces.append(piece)
            images += n
        text = "".join(pieces)
    else:
        text = str(content)
    if message.get("tool_calls"):
        text += ("\n" if text else "") + json.dumps(message["tool_calls"], ensure_ascii=False, default=str)
    return text, images


def flatten_messages(messages: list[Mapping[str, Any]], captions: Mapping[str, str] | None = None) -> FlatMessages:
    """Messages with string content only; images replaced by ``image_to_text``; ``developer`` -> ``system``."""
    turns: list[dict[str, str]] = []
    downgrades = 0
    for message in messages:
        text, n = _content_to_text(message, captions)
        downgrades += n
        role = message.get("role", "user")
        turns.append({"role": "system" if role == "developer" else role, "content": text})
    return FlatMessages(messages=turns, image_downgrades=downgrades)
