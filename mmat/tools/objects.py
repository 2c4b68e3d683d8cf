"""``objectlocation``: open-vocabulary detection with OWLv2 / OWL-ViT, only from local weights.

No open-vocabulary detector ships in a wheel, so on a machine without saved weights the tool reports
itself unavailable (``mmat tools`` says where to put weights) and a call returns that as an error
observation. With weights in ``MMAT_HOME/models/owlv2`` or the HF cache it runs on CPU.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError, ToolUnavailableError
from mmat.tools.imaging import format_box
from mmat.tools.registry import ToolEnv, tool
from mmat.tools.weights import find_weights, weights_status

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["objectlocation", "locate_objects", "owl_status", "OWL_ALIAS", "OWL_REPOS"]

OWL_ALIAS = "owlv2"
OWL_REPOS = ("google/owlv2-base-patch16-ensemble", "google/owlvit-base-patch32")
SCORE_THRESHOLD = 0.1  # OWLv2's own demo threshold
NMS_IOU = 0.5
MAX_BOXES = 10

_models: dict[Path, tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def owl_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return False, "torch and transformers are needed for OWLv2 detection"
    return weights_status(env.settings, OWL_ALIAS, OWL_REPOS, "OWLv2/OWL-ViT detection")


def _load(path: Path) -> tuple[Any, Any]:
    with _models_lock:
        if path not in _models:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=True).eval()
            _models[path] = (processor, model)
        return _models[path]


def _nms(boxes: list[list[float]], scores: list[float], iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    kept: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) < iou for j in kept):
            kept.append(i)
    return kept


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def locate_objects(weights: Path, img: Image.Image, query: str) -> list[tuple[list[float], float]]:
    """(box, score) pairs for ``query`` in ``img``, boxes clipped to the image, best first."""
    import torch

    processor, model = _load(weights)
    inputs = processor(text=[[query]], images=img, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    # OWLv2 pads the image to a square before predicting: boxes are relative to that square.
    side = max(img.size)
    target = (side, side) if model.config.model_type == "owlv2" else (img.height, img.width)
    result = processor.post_process_grounded_object_detection(
        outputs, threshold=SCORE_THRESHOLD, target_sizes=[target], text_labels=[[query]]
    )[0]
    boxes = [[max(0.0, min(float(v), lim)) for v, lim in zip(b, (img.width, img.height) * 2)] for b in result["boxes"].tolist()]
    scores = [float(s) for s in result["scores"].tolist()]
    # Boxes predicted on OWLv2's padding clip to nothing: keep only ones at least a pixel wide and tall.
    real = [i for i, b in enumerate(boxes) if b[2] - b[0] >= 1 and b[3] - b[1] >= 1]
    boxes, scores = [boxes[i] for i in real], [scores[i] for i in real]
    return [(boxes[i], scores[i]) for i in _nms(boxes, scores, NMS_IOU)][:MAX_BOXES]


@tool(returns="the boxes '[x1, y1, x2, y2]' (pixels) where the object was found, with confidence scores")
def objectlocation(
    object: Annotated[str, "What to find, in a few words, e.g. 'red car' or 'dog'."],
    image_path: Annotated[str, "Image file in the workspace."],
) -> str:
    """Locate every instance of an object in an image and give their bounding boxes."""


@objectlocation.backend("owlv2", check=owl_status)
def _objects_owl(ctx: ToolContext, object: str, image_path: str) -> str:
    query = object.strip()
    if not query:
        raise ToolArgumentError("objectlocation: 'object' is empty; say what to find, e.g. 'cat'")
    img, name = ctx.open_image("objectlocation", image_path)
    found = find_weights(ctx.settings, OWL_ALIAS, OWL_REPOS)
    if found is None:  # removed between the availability check and now
        raise ToolUnavailableError(f"objectlocation: {owl_status(ctx.env)[1]}")
    hits = locate_objects(found.path, img, query[:200])
    if not hits:
        return f"No '{query}' found in '{name}' ({img.width}x{img.height})."
    listed = "\n".join(f"{format_box(b)} score {s:.2f}" for b, s in hits)
    return f"{len(hits)} '{query}' found in '{name}' ({img.width}x{img.height}), boxes as [x1, y1, x2, y2]:\n{listed}"
