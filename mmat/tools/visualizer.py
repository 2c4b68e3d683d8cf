"""``visualizer``: answer a question about an image.

With ``settings.vqa_model`` set, a multimodal model sees the image (``dspy.Image`` in a typed
signature). Offline there is no model that sees, so the answer is *derived*: local tools gather what
they can (size, dominant colors, OCR text, faces, the pool caption when the image came from the
captioned pool) and the text model answers from those facts. Every derived answer starts with
:data:`DERIVED_LABEL`, so trajectories, filters and readers can tell it from real visual answers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any

from mmat.tools.context import ToolContext, run_signature
from mmat.tools.errors import ToolArgumentError
from mmat.tools.faces import detect_faces, haar_status
from mmat.tools.imaging import dominant_colors, downscale, format_box
from mmat.tools.ocr import rapidocr_status, read_text
from mmat.tools.registry import ToolEnv, tool

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["visualizer", "DERIVED_LABEL", "gather_facts"]

DERIVED_LABEL = "[derived from OCR/faces/colors/caption, no VQA model]"
MAX_OCR_LINES = 40
VQA_MAX_SIDE = 1536  # images sent to the VQA model are at most this size (bounds request size and cost)

_vqa_lms: dict[tuple[str, str | None], Any] = {}
_vqa_lock = threading.Lock()


@tool(returns="the answer to the question")
def visualizer(
    question: Annotated[str, "The question about the image, e.g. 'What brand is on the cup?' or 'Describe the image.'"],
    image_path: Annotated[str, "Image file in the workspace."],
) -> str:
    """Answer a question about an image: describe it, identify objects, read details, count things, compare regions."""


def vqa_status(env: ToolEnv) -> tuple[bool, str]:
    if not env.settings.vqa_model:
        return False, "no multimodal model configured: set MMAT_VQA_MODEL (a litellm model string that accepts images)"
    return True, f"multimodal model {env.settings.vqa_model} sees the image"


def derived_status(env: ToolEnv) -> tuple[bool, str]:
    sources = ["size", "colors"]
    if rapidocr_status(env)[0]:
        sources.append("OCR")
    if haar_status(env)[0]:
        sources.append("faces")
    sources.append("pool caption when known")
    who = f"the text model ({env.lm_name}) answers" if env.lm_name else "no text model: returns the facts"
    return True, f"no model sees the image; {who} from {', '.join(sources)}; answers labelled {DERIVED_LABEL}"


def gather_facts(ctx: ToolContext, img: Image.Image, name: str) -> list[str]:
    """What local tools can say about the image, one fact per line, each naming its source."""
    facts = [f"size: {img.width}x{img.height} pixels"]
    colors = ", ".join(f"{name} {share:.0%}" for name, share in dominant_colors(img))
    facts.append(f"dominant colors: {colors}")
    if ctx.caption_lookup is not None:
        caption = ctx.caption_lookup(ctx.workspace / name)  # a key to look up, never opened
        if caption:
            facts.append(f"caption: {caption.strip()}")
    if rapidocr_status()[0]:
        lines = read_text(img)
        if lines:
            shown = "; ".join(f"'{l.text}' at {format_box(l.box)}" for l in lines[:MAX_OCR_LINES])
            more = f" (+{len(lines) - MAX_OCR_LINES} more lines)" if len(lines) > MAX_OCR_LINES else ""
            facts.append(f"text read by OCR: {shown}{more}")
        else:
            facts.append("text read by OCR: none")
    if haar_status()[0]:
        boxes = detect_faces(img)
        listed = ", ".join(format_box(b) for b in boxes)
        facts.append(f"frontal faces detected: {len(boxes)}" + (f" at {listed}" if boxes else ""))
    return facts


def _question(text: str) -> str:
    if not text.strip():
        raise ToolArgumentError("visualizer: the question is empty; ask something about the image, e.g. 'Describe the image.'")
    return text.strip()


@visualizer.backend("vqa-model", check=vqa_status)
def _visualizer_vqa(ctx: ToolContext, question: str, image_path: str) -> str:
    import dspy

    from mmat.signatures.tools import VisualQuestion

    q = _question(question)
    img, _ = ctx.open_image("visualizer", image_path)  # decodes: a corrupt file fails here, not at the API
    key = (ctx.settings.vqa_model, ctx.settings.api_base)
    with _vqa_lock:
        if key not in _vqa_lms:
            from mmat.lm import build_lm

            _vqa_lms[key] = build_lm(key[0], settings=ctx.settings)
    return run_signature(_vqa_lms[key], VisualQuestion, "visualizer", image=dspy.Image.from_PIL(downscale(img, VQA_MAX_SIDE)[0]), question=q).answer


@visualizer.backend("derived", check=derived_status)
def _visualizer_derived(ctx: ToolContext, question: str, image_path: str) -> str:
    from mmat.signatures.tools import DerivedVisualAnswer

    q = _question(question)
    img, name = ctx.open_image("visualizer", image_path)
    facts = "\n".join(f"- {f}" for f in gather_facts(ctx, img, name))
    if ctx.lm is None:
        return f"{DERIVED_LABEL} No model can look at '{name}' here; facts the local tools found:\n{facts}"
    answer = ctx.predict("visualizer", DerivedVisualAnswer, question=q, facts=facts).answer
    return f"{DERIVED_LABEL} {answer.strip()}"
