"""Inputs the tool tests make themselves: rendered text images."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def render_text(lines: list[str], size: tuple[int, int] = (720, 80), font_px: int = 32) -> Image.Image:
    """White image with black text lines, as a scanned note or a sign would show them."""
    img = Image.new("RGB", (size[0], size[1] * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_px)
    for i, line in enumerate(lines):
        draw.text((24, 20 + i * size[1]), line, fill="black", font=font)
    return img
