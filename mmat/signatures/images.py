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


# Largest image file sent to a model (the sandbox's default file-size limit).
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def image_data_uri(path: str | Path) -> str:
    """``data:<mime>;base64,...`` for an image file (what a vision model receives).

    The file may sit in a live sandbox's workspace (a task's staged image), so it is opened from its
    directory's fd without following a link, non-blocking, regular files only (mmat.sandbox.safefs):
    a name swapped for a link to a host file is an OSError, never the host file's bytes."""
    from mmat.sandbox import safefs

    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    with safefs.root(path.parent) as fd:
        data = safefs.read_bytes(fd, path.name, MAX_IMAGE_BYTES)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


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
            try:
                url = image_data_uri(ref.path) if self.inline else ref.path
            except OSError as e:  # e.g. sandboxed code replaced a task image with a directory or a link
                why = e.strerror or type(e).__name__
                parts.append({"type": "text", "text": f"{ref.name or Path(ref.path).name}: [the image could not be read: {why}]"})
                continue
            if ref.name:
                parts.append({"type": "text", "text": f"{ref.name}:"})
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts

    def __len__(self) -> int:
        return len(self.items)
