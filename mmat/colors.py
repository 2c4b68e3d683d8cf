"""Named dominant colours of an image: a rough description for text-only models and the derived VQA.

Shared by the local provider (images shown to a text-only model as text) and the visualizer tool.
"""

from __future__ import annotations

from PIL import Image

__all__ = ["color_name", "dominant_colors"]

# A small palette of everyday color names: enough to say "mostly blue and white", not a color science tool.
_NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "dark gray": (64, 64, 64),
    "gray": (128, 128, 128),
    "light gray": (192, 192, 192),
    "white": (255, 255, 255),
    "red": (200, 30, 30),
    "dark red": (120, 20, 20),
    "orange": (240, 140, 30),
    "brown": (130, 80, 40),
    "beige": (220, 200, 160),
    "yellow": (240, 220, 40),
    "olive": (128, 128, 0),
    "green": (40, 160, 60),
    "dark green": (20, 80, 30),
    "teal": (0, 128, 128),
    "cyan": (60, 210, 230),
    "light blue": (150, 190, 240),
    "blue": (40, 80, 200),
    "navy": (20, 30, 100),
    "purple": (120, 50, 160),
    "pink": (240, 150, 190),
    "magenta": (220, 40, 180),
}


def color_name(rgb: tuple[int, int, int]) -> str:
    """Nearest named color (Euclidean in RGB; good enough for a rough description)."""
    return min(_NAMED_COLORS, key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, _NAMED_COLORS[n])))


def dominant_colors(img: Image.Image, k: int = 3) -> list[tuple[str, float]]:
    """Up to ``k`` named colors with their share of the image, largest first."""
    small = img.convert("RGB").copy()
    small.thumbnail((96, 96))
    quantized = small.quantize(colors=8)
    palette = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], reverse=True)
    total = sum(c for c, _ in counts) or 1
    shares: dict[str, float] = {}
    for count, index in counts:
        rgb = tuple(palette[3 * index : 3 * index + 3])
        name = color_name(rgb)  # type: ignore[arg-type]
        shares[name] = shares.get(name, 0.0) + count / total
    return sorted(shares.items(), key=lambda kv: kv[1], reverse=True)[:k]
