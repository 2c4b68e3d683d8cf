"""``Images``: named images as one signature input, rendered as text-and-image_url content parts.

``list[dspy.Image]`` renders with stray JSON brackets around the image parts and loses file names; an
agent looking at three files must know which picture is which. ``Images`` renders each named image as
a ``<name>:`` text part followed by its ``image_url`` part (unnamed images as the image part alone: an
agent's step images are stored under content-addressed blob paths, so their names are not kept).
With ``inline=True`` (what models receive) the url is a base64 data URI read from the file; with
``inline=False`` it is the file path, which is how training data refers to images
(:func:`mmat.programs.trajectory_conversation`).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

import dspy
import pydantic

__all__ = ["ImageRef", "Images", "image_data_uri"]


def image_data_uri(path: str | Path) -> str:
    """``data:<mime>;base64,...`` for an image file (what a vision model receives)."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


class ImageRef(pydantic.BaseModel):
    """One image file and the name the model knows it by."""

    model_config = pydantic.ConfigDict(frozen=True)

    name: str | None = None
    path: str


class Images(dspy.Type):
    """Images shown to the model, each preceded by its name."""

    items: list[ImageRef]
    inline: bool = True

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def of(cls, files: list[tuple[str | None, str | Path]], *, inline: bool = True) -> Images:
        """``Images.of([(name or None, path), ...])``."""
        return cls(items=[ImageRef(name=name, path=str(path)) for name, path in files], inline=inline)

    def format(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for ref in self.items:
            url = image_data_uri(ref.path) if self.inline else ref.path
            if ref.name:
                parts.append({"type": "text", "text": f"{ref.name}:"})
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts

    def __len__(self) -> int:
        return len(self.items)
