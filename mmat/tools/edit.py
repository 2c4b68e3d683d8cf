"""``image_edit``: the text model turns the instruction into typed edit operations; PIL applies them.

The model never writes pixels or code here: it fills :class:`mmat.signatures.tools.ImageEditPlan`
(a bounded list of ``EditOp``s with Literal names and typed parameters), and each operation is a
deterministic PIL function below. Without a text model the tool is unavailable; guessing operations
from keywords would silently do the wrong edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext
from mmat.tools.errors import ToolArgumentError
from mmat.tools.imaging import clamp_box
from mmat.tools.registry import ToolEnv, tool

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["image_edit", "apply_ops", "lm_status"]


def lm_status(env: ToolEnv) -> tuple[bool, str]:
    if env.lm_name is None:
        return False, "needs a text model: give the tool host an lm (the teacher) to plan the edit"
    return True, f"the text model ({env.lm_name}) plans typed edit operations; PIL applies them"


@tool(returns="the file name of the edited image and the operations applied")
def image_edit(
    prompt: Annotated[str, "The edit to make, with any coordinates, e.g. 'crop to [10, 20, 200, 180]' or 'blur the box [50, 40, 120, 110]'."],
    image_path: Annotated[str, "Image file in the workspace."],
) -> str:
    """Edit an image as instructed: crop, rotate, resize, flip, blur (all or a region), grayscale, brightness, contrast, artistic filters, or draw boxes and text. Saves a new image file; the original is kept."""


def _crop(img: Image.Image, op: Any) -> Image.Image:
    return img.crop(clamp_box("image_edit", tuple(op.box), img.size))


def _rotate(img: Image.Image, op: Any) -> Image.Image:
    from PIL import Image

    return img.rotate(op.degrees, expand=True, resample=Image.Resampling.BICUBIC, fillcolor="white")


def _resize(img: Image.Image, op: Any) -> Image.Image:
    from PIL import Image

    return img.resize((op.width, op.height), Image.Resampling.LANCZOS)


def _blur(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageFilter

    blur = ImageFilter.GaussianBlur(op.radius)
    if op.box is None:
        return img.filter(blur)
    box = clamp_box("image_edit", tuple(op.box), img.size)
    out = img.copy()
    out.paste(img.crop(box).filter(blur), box[:2])
    return out


def _grayscale(img: Image.Image, op: Any) -> Image.Image:
    return img.convert("L").convert("RGB")


def _flip(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageOps

    return ImageOps.mirror(img) if op.direction == "horizontal" else ImageOps.flip(img)


def _brightness(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(img).enhance(op.factor)


def _contrast(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(img).enhance(op.factor)


def _draw_box(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    box = clamp_box("image_edit", tuple(op.box), img.size)
    out = img.copy()
    draw = ImageDraw.Draw(out)
    draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=op.color, width=op.width)
    if op.label:
        size = max(12, min(48, img.height // 25))
        font = ImageFont.load_default(size=size)
        draw.text((box[0], max(0, box[1] - size - 4)), op.label, fill=op.color, font=font)
    return out


def _draw_text(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    x, y = op.position
    if not (0 <= x < img.width and 0 <= y < img.height):
        raise ToolArgumentError(f"image_edit: text position [{x}, {y}] is outside the {img.width}x{img.height} image")
    out = img.copy()
    ImageDraw.Draw(out).text((x, y), op.text, fill=op.color, font=ImageFont.load_default(size=op.size))
    return out


def _stylize(img: Image.Image, op: Any) -> Image.Image:
    from PIL import ImageFilter, ImageOps

    if op.style == "sepia":
        return ImageOps.colorize(img.convert("L"), black="#2b1d0e", white="#f5e6c8", mid="#a0785a")
    if op.style == "invert":
        return ImageOps.invert(img)
    if op.style == "posterize":
        return ImageOps.posterize(img, 3)
    if op.style == "sketch":
        edges = img.convert("L").filter(ImageFilter.FIND_EDGES)
        return ImageOps.invert(ImageOps.autocontrast(edges)).convert("RGB")
    named = {"emboss": ImageFilter.EMBOSS, "contour": ImageFilter.CONTOUR, "sharpen": ImageFilter.SHARPEN}
    return img.filter(named[op.style])


_APPLY: dict[str, Callable[[Image.Image, Any], Image.Image]] = {
    "crop": _crop,
    "rotate": _rotate,
    "resize": _resize,
    "blur": _blur,
    "grayscale": _grayscale,
    "flip": _flip,
    "brightness": _brightness,
    "contrast": _contrast,
    "draw_box": _draw_box,
    "draw_text": _draw_text,
    "stylize": _stylize,
}


def describe_op(op: Any) -> str:
    """``crop(box=[10, 10, 90, 90])``: how an applied operation is reported back to the agent."""
    params = ", ".join(f"{k}={v!r}" for k, v in op.model_dump().items() if k != "op" and v is not None)
    return f"{op.op}({params})"


def apply_ops(img: Image.Image, ops: list[Any]) -> Image.Image:
    """Apply typed edit operations in order; coordinates refer to the image as it is at that step."""
    for op in ops:
        img = _APPLY[op.op](img, op)
    return img


@image_edit.backend("pil-ops", check=lm_status)
def _edit_pil(ctx: ToolContext, prompt: str, image_path: str) -> str:
    from mmat.signatures.tools import MAX_EDIT_OPS, ImageEditPlan

    if not prompt.strip():
        raise ToolArgumentError("image_edit: the prompt is empty; say what to change, e.g. 'rotate 90 degrees'")
    img, _ = ctx.open_image("image_edit", image_path)
    plan = ctx.predict("image_edit", ImageEditPlan, instruction=prompt, image_info=f"{img.width}x{img.height} pixels, RGB")
    ops = list(plan.ops)[:MAX_EDIT_OPS]
    if not ops:
        raise ToolArgumentError(
            "image_edit: no edit operation matches this prompt; ask for one of: crop, rotate, resize, blur, "
            "grayscale, flip, brightness, contrast, draw a box, draw text, or a filter (sepia, invert, sketch, ...)"
        )
    edited = apply_ops(img, ops)
    with ctx.new_output("edited") as (name, out):
        edited.save(out, format="PNG")
    steps = "; ".join(describe_op(op) for op in ops)
    return f"Saved edited image to {name} ({edited.width}x{edited.height}). Applied: {steps}."
