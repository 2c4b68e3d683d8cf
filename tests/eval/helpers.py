"""Test helpers for the eval tests: small image files made with PIL."""

from pathlib import Path

from PIL import Image


def make_image(path: Path, color=(200, 30, 30), size=(32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path
