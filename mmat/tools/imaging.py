"""Small image helpers shared by the vision tools: boxes, downscaling, color names."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from mmat.colors import color_name, dominant_colors  # noqa: F401 -- the tools import them from here
from mmat.tools.errors import ToolArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Box", "parse_box", "clamp_box", "format_box", "downscale", "dominant_colors", "color_name"]

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive


def parse_box(tool: str, value: object) -> tuple[float, float, float, float]:
    """A box from the model: ``[x1, y1, x2, y2]`` as a list or as its text (JSON or comma separated)."""
    numbers: object = value
    if isinstance(value, str):
        text = value.strip()
        try:
            numbers = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            numbers = None
    if (
        not isinstance(numbers, (list, tuple))
        or len(numbers) != 4
        or not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers)
    ):
        raise ToolArgumentError(
            f"{tool}: expected a box '[x1, y1, x2, y2]' (four pixel coordinates, top-left then bottom-right), "
            f"got {str(value)[:80]!r}; get boxes from objectlocation or facedetection"
        )
    x1, y1, x2, y2 = (float(n) for n in numbers)
    return x1, y1, x2, y2


def clamp_box(tool: str, box: tuple[float, float, float, float], size: tuple[int, int]) -> Box:
    """Clip a box to the image; refuse one that is empty after clipping."""
    w, h = size
    x1, x2 = sorted((box[0], box[2]))
    y1, y2 = sorted((box[1], box[3]))
    cx1, cy1 = max(0, round(x1)), max(0, round(y1))
    cx2, cy2 = min(w, round(x2)), min(h, round(y2))
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise ToolArgumentError(
            f"{tool}: box {format_box(box)} does not overlap the {w}x{h} image; coordinates are pixels, "
            "[x1, y1, x2, y2] with 0 <= x < width and 0 <= y < height"
        )
    return cx1, cy1, cx2, cy2


def format_box(box: tuple[float, ...]) -> str:
    return "[" + ", ".join(str(round(v)) for v in box) + "]"


def downscale(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Shrink so the longer side is at most ``max_side``; returns (image, scale from original to small)."""
    longest = max(img.size)
    if longest <= max_side:
        return img, 1.0
    scale = max_side / longest
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size), scale



