"""``ocr``: read the text in an image with RapidOCR (PP-OCR models shipped inside the wheel).

Only rapidocr's bundled default models are used: any other model choice downloads at first use,
and ``vis()`` downloads a font, so neither is ever called. The engine is built once per process.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolError
from mmat.tools.imaging import format_box
from mmat.tools.registry import ToolEnv, tool

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["ocr", "OcrLine", "read_text", "rapidocr_status"]

DETECTOR_MAX_SIDE = 960  # the text detector sees at most this many pixels on the long side (speed; checked accurate)
MAX_LINES = 200  # lines reported in one observation

_engine: Any = None
_engine_lock = threading.Lock()


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]
    score: float


def rapidocr_status(env: ToolEnv | None = None) -> tuple[bool, str]:
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return False, "rapidocr is not installed: pip install rapidocr==3.10.0"
    models = Path(spec.submodule_search_locations[0]) / "models"
    if not any(models.glob("*det*.onnx")) or not any(models.glob("*rec*.onnx")):
        return False, f"rapidocr's bundled models are missing from {models}: reinstall rapidocr==3.10.0"
    return True, "rapidocr with its bundled PP-OCR models (onnxruntime, CPU)"


def _get_engine() -> Any:
    global _engine
    if _engine is None:
        from rapidocr import RapidOCR

        _engine = RapidOCR(
            params={
                "Global.log_level": "error",  # "no text found" is an answer, not a warning
                "Det.limit_side_len": DETECTOR_MAX_SIDE,
                "Det.limit_type": "max",
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )
    return _engine


def read_text(img: Image.Image) -> list[OcrLine]:
    """Text lines in reading order (top to bottom, then left to right)."""
    with _engine_lock:  # the engine updates its parameters on every call: one call at a time
        engine = _get_engine()
        try:
            result = engine(img)
        except Exception as e:
            if not type(e).__module__.startswith("rapidocr."):
                raise  # not the engine refusing this input: a bug, raised as such
            # rapidocr's own errors for inputs it cannot handle, e.g. a 1 x 3000 image it cannot resize
            raise ToolError(
                f"the OCR engine could not process this {img.width}x{img.height} image ({type(e).__name__}: "
                f"{str(e)[:160] or 'no detail'}); crop or resize it to a more usual shape first"
            ) from None
    if result.txts is None or result.boxes is None:
        return []
    lines = []
    for text, quad, score in zip(result.txts, result.boxes, result.scores):
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        box = (round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys)))
        if text.strip():
            lines.append(OcrLine(text.strip(), box, float(score)))
    return _reading_order(lines)


def _reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Group lines whose vertical centres are within half a line height into rows; rows left to right."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda l: l.box[1] + l.box[3]):
        centre, half = (line.box[1] + line.box[3]) / 2, (line.box[3] - line.box[1]) / 2
        if rows and abs(centre - (rows[-1][0].box[1] + rows[-1][0].box[3]) / 2) <= half:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda l: l.box[0])]


@tool(returns="the text lines found, one per line as '[x1, y1, x2, y2] text' (pixel box), or a note that there is none")
def ocr(image_path: Annotated[str, "Image file in the workspace, e.g. 'receipt.jpg'."]) -> str:
    """Read the text written in an image (documents, signs, labels, screenshots, charts), line by line."""


@ocr.backend("rapidocr", check=rapidocr_status)
def _ocr_rapidocr(ctx: ToolContext, image_path: str) -> str:
    img, name = ctx.open_image("ocr", image_path)
    lines = read_text(img)
    if not lines:
        return f"No text found in '{name}'."
    shown = lines[:MAX_LINES]
    more = f"\n({len(lines) - MAX_LINES} more lines not shown)" if len(lines) > MAX_LINES else ""
    body = "\n".join(f"{format_box(l.box)} {l.text}" for l in shown)
    return f"{len(lines)} text line(s) in '{name}' (box = [x1, y1, x2, y2] in pixels):\n{body}{more}"
