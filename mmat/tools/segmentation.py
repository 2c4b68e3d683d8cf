"""``segmentation``: cut the object inside a box prompt out of an image as a mask PNG.

SAM runs when its weights are local; otherwise OpenCV GrabCut segments from the same box prompt.
GrabCut costs ~1 s at 512 px and ~18 s at 1024 px on this class of CPU, so it runs on a copy whose
long side is at most 512 px and the mask is scaled back to the original size.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolError, ToolUnavailableError
from mmat.tools.imaging import Box, clamp_box, downscale, format_box, parse_box
from mmat.tools.registry import ToolEnv, tool
from mmat.tools.weights import find_weights, weights_status

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

__all__ = ["segmentation", "grabcut_mask", "sam_mask", "SAM_ALIAS", "SAM_REPOS"]

GRABCUT_MAX_SIDE = 512
GRABCUT_ITERATIONS = 5
SAM_ALIAS = "sam"
SAM_REPOS = ("facebook/sam-vit-base", "facebook/sam-vit-large", "facebook/sam-vit-huge")

_sam: dict[Path, tuple[Any, Any]] = {}
_sam_lock = threading.Lock()


@tool(returns="the file name of the mask image (white = object) with the object's area and bounding box")
def segmentation(
    image_path: Annotated[str, "Image file in the workspace."],
    prompt: Annotated[
        str | list[float],
        "Box around the object to segment, '[x1, y1, x2, y2]' in pixels (get one from objectlocation or facedetection).",
    ],
) -> str:
    """Segment the object inside a box: writes a black-and-white mask image of its exact shape."""


def sam_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return False, "torch and transformers are needed for SAM"
    return weights_status(env.settings, SAM_ALIAS, SAM_REPOS, "SAM")


def grabcut_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("cv2") is None:
        return False, "OpenCV is not installed: pip install opencv-python-headless==4.14.0.94"
    return True, f"OpenCV GrabCut from the box prompt (runs at <= {GRABCUT_MAX_SIDE} px)"


def grabcut_mask(img: Image.Image, box: Box) -> np.ndarray:
    """Boolean mask (H, W) of the original image: GrabCut initialised with ``box`` on a downscaled copy."""
    import cv2
    import numpy as np
    from PIL import Image

    small, scale = downscale(img, GRABCUT_MAX_SIDE)
    w, h = small.size
    x1, y1 = min(w - 2, int(box[0] * scale)), min(h - 2, int(box[1] * scale))
    x2, y2 = max(x1 + 2, round(box[2] * scale)), max(y1 + 2, round(box[3] * scale))
    # GrabCut learns the background from outside the rectangle: keep at least a 1 px border outside it.
    x1, y1, x2, y2 = max(1, x1), max(1, y1), min(w - 1, x2), min(h - 1, y2)
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2BGR), mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd,
                    GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    except cv2.error as e:
        raise ToolError(
            f"segmentation: GrabCut could not separate the object in box {format_box(box)} "
            f"({str(e).strip().splitlines()[-1]}); use a tighter box that leaves some background around the object"
        ) from None
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    if scale != 1.0:
        fg = np.asarray(Image.fromarray(fg).resize(img.size, Image.Resampling.NEAREST))
    return fg > 0


def sam_mask(weights: Path, img: Image.Image, box: Box) -> np.ndarray:
    """Boolean mask (H, W) from SAM prompted with ``box``."""
    import torch

    with _sam_lock:
        if weights not in _sam:
            from transformers import SamModel, SamProcessor

            _sam[weights] = (SamProcessor.from_pretrained(weights, local_files_only=True),
                             SamModel.from_pretrained(weights, local_files_only=True).eval())
    processor, model = _sam[weights]
    inputs = processor(images=img, input_boxes=[[[float(v) for v in box]]], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=False)
    masks = processor.image_processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    return masks[0][0, 0].numpy().astype(bool)


def _write_mask(ctx: ToolContext, img: Image.Image, mask: np.ndarray, box: Box, method: str) -> str:
    import numpy as np
    from PIL import Image

    with ctx.new_output("mask") as (name, out):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(out, format="PNG")  # 2-D uint8: mode L
    head = f"Saved mask to {name} ({img.width}x{img.height}, white = object, {method})"
    area = int(mask.sum())
    if area == 0:
        return f"{head}: no object found inside box {format_box(box)}; the mask is empty."
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    share = 100.0 * area / (img.width * img.height)
    return f"{head}: object area {area} pixels ({share:.1f}% of the image), object bounding box {format_box(bbox)}."


def _box_prompt(ctx: ToolContext, image_path: str, prompt: str | list[float]) -> tuple[Image.Image, Box]:
    img, _ = ctx.open_image("segmentation", image_path)
    return img, clamp_box("segmentation", parse_box("segmentation", prompt), img.size)


@segmentation.backend("sam", check=sam_status)
def _segment_sam(ctx: ToolContext, image_path: str, prompt: str | list[float]) -> str:
    img, box = _box_prompt(ctx, image_path, prompt)
    found = find_weights(ctx.settings, SAM_ALIAS, SAM_REPOS)
    if found is None:  # removed between the availability check and now
        raise ToolUnavailableError(f"segmentation: {sam_status(ctx.env)[1]}")
    return _write_mask(ctx, img, sam_mask(found.path, img, box), box, "SAM")


@segmentation.backend("grabcut", check=grabcut_status)
def _segment_grabcut(ctx: ToolContext, image_path: str, prompt: str | list[float]) -> str:
    img, box = _box_prompt(ctx, image_path, prompt)
    return _write_mask(ctx, img, grabcut_mask(img, box), box, "GrabCut")
