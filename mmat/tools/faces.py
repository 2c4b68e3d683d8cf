"""``facedetection``: frontal faces with OpenCV's Haar cascade ``haarcascade_frontalface_alt2``.

No DNN face model ships in any wheel; the Haar cascade ships with opencv-python-headless 4.x (5.0
dropped ``cv2.data``), found the astronaut's face in scikit-image's sample with no false positives
on the other samples, and needs no model download (under a second per photo on CPU).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.imaging import Box, downscale, format_box
from mmat.tools.registry import ToolEnv, tool

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["facedetection", "detect_faces", "haar_status", "CASCADE_FILE"]

CASCADE_FILE = "haarcascade_frontalface_alt2.xml"
DETECT_MAX_SIDE = 1024  # detection runs on at most this size; boxes are mapped back to the original
MIN_FACE_FRACTION = 0.03  # faces smaller than 3% of the shorter side are ignored (mostly texture noise)

_cascade: Any = None
_cascade_lock = threading.Lock()


def _cascade_path() -> Path | None:
    """Where cv2.data.haarcascades points, found without importing cv2 (status checks stay cheap)."""
    spec = importlib.util.find_spec("cv2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "data" / CASCADE_FILE


def haar_status(env: ToolEnv | None = None) -> tuple[bool, str]:
    if importlib.util.find_spec("cv2") is None:
        return False, "OpenCV is not installed: pip install opencv-python-headless==4.14.0.94"
    path = _cascade_path()
    if path is None or not path.is_file():
        return False, f"OpenCV has no {CASCADE_FILE} (5.x dropped cv2.data): pin opencv-python-headless==4.14.0.94"
    return True, f"OpenCV Haar cascade {CASCADE_FILE}"


def detect_faces(img: Image.Image) -> list[Box]:
    """Face boxes ``(x1, y1, x2, y2)`` in the original image's pixels, left to right."""
    import cv2
    import numpy as np

    global _cascade
    small, scale = downscale(img, DETECT_MAX_SIDE)
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY))
    min_side = max(20, round(min(small.size) * MIN_FACE_FRACTION))
    with _cascade_lock:  # CascadeClassifier is not documented as thread-safe
        if _cascade is None:
            _cascade = cv2.CascadeClassifier(str(_cascade_path()))
        found = _cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    boxes = [
        (round(x / scale), round(y / scale), round((x + w) / scale), round((y + h) / scale)) for x, y, w, h in found
    ]
    return sorted(boxes)


@tool(returns="how many faces were found and each face's box '[x1, y1, x2, y2]' in pixels")
def facedetection(image_path: Annotated[str, "Image file in the workspace."]) -> str:
    """Find human faces in an image and give their bounding boxes (frontal faces; profiles may be missed)."""


@facedetection.backend("opencv-haar", check=haar_status)
def _faces_haar(ctx: ToolContext, image_path: str) -> str:
    img, name = ctx.open_image("facedetection", image_path)
    boxes = detect_faces(img)
    if not boxes:
        return f"No faces found in '{name}' ({img.width}x{img.height})."
    listed = "\n".join(f"face {i}: {format_box(b)}" for i, b in enumerate(boxes, 1))
    return f"{len(boxes)} face(s) in '{name}' ({img.width}x{img.height}), boxes as [x1, y1, x2, y2]:\n{listed}"
