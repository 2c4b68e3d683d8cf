"""Signatures behind the model-driven tools: image_edit, image_generator, visualizer, inspect_file_as_text
and the simulated search backend.

Docstrings and field descriptions are the only prompt text these tools send: write them for a small
model that reads literally. Every output is typed and bounded (Literals, length limits), so a
JSON-schema-constrained local model cannot run on, and a tool never parses free text.
"""

from __future__ import annotations

from typing import Literal, Union

import dspy
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Color",
    "CropOp",
    "RotateOp",
    "ResizeOp",
    "BlurOp",
    "GrayscaleOp",
    "FlipOp",
    "BrightnessOp",
    "ContrastOp",
    "DrawBoxOp",
    "DrawTextOp",
    "StylizeOp",
    "EditOp",
    "EDIT_OP_NAMES",
    "MAX_EDIT_OPS",
    "ImageEditPlan",
    "ChartSeries",
    "ChartSpec",
    "ChartPlan",
    "MAX_CHART_POINTS",
    "DerivedVisualAnswer",
    "VisualQuestion",
    "FileQuestion",
    "SimulatedSearch",
]

MAX_EDIT_OPS = 6
MAX_CHART_POINTS = 24

Color = Literal["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "gray", "cyan", "magenta", "brown"]
BoxCoords = list[int]  # [x1, y1, x2, y2]; length enforced by the Field on each use


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CropOp(_Op):
    """Keep only the part of the image inside the box."""

    op: Literal["crop"]
    box: BoxCoords = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels, top-left then bottom-right.")


class RotateOp(_Op):
    """Rotate the whole image; the canvas grows so nothing is cut off."""

    op: Literal["rotate"]
    degrees: float = Field(ge=-360, le=360, description="Angle in degrees, counterclockwise (use -90 to turn clockwise).")


class ResizeOp(_Op):
    """Scale the image to an exact size."""

    op: Literal["resize"]
    width: int = Field(ge=1, le=4096, description="New width in pixels.")
    height: int = Field(ge=1, le=4096, description="New height in pixels.")


class BlurOp(_Op):
    """Gaussian blur, of the whole image or only inside a box (e.g. to hide a face or a plate)."""

    op: Literal["blur"]
    radius: float = Field(ge=0.5, le=50, description="Blur strength in pixels: 2 is soft, 10 is strong, 25 makes things unrecognisable.")
    box: BoxCoords | None = Field(min_length=4, max_length=4, description="Region [x1, y1, x2, y2] to blur, or null for the whole image.")


class GrayscaleOp(_Op):
    """Convert to black and white (shades of gray)."""

    op: Literal["grayscale"]


class FlipOp(_Op):
    """Mirror the image."""

    op: Literal["flip"]
    direction: Literal["horizontal", "vertical"] = Field(description="horizontal swaps left and right; vertical swaps top and bottom.")


class BrightnessOp(_Op):
    """Make the image brighter or darker."""

    op: Literal["brightness"]
    factor: float = Field(ge=0.0, le=4.0, description="1 keeps it, 1.5 is 50% brighter, 0.5 is half as bright.")


class ContrastOp(_Op):
    """Increase or reduce contrast."""

    op: Literal["contrast"]
    factor: float = Field(ge=0.0, le=4.0, description="1 keeps it, above 1 is more contrast, below 1 is flatter.")


class DrawBoxOp(_Op):
    """Draw a rectangle outline, optionally with a label above it."""

    op: Literal["draw_box"]
    box: BoxCoords = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels.")
    color: Color
    width: int = Field(ge=1, le=20, description="Line width in pixels (3 is usual).")
    label: str | None = Field(max_length=60, description="Short text written above the box, or null.")


class DrawTextOp(_Op):
    """Write text on the image."""

    op: Literal["draw_text"]
    text: str = Field(min_length=1, max_length=200)
    position: list[int] = Field(min_length=2, max_length=2, description="[x, y] of the text's top-left corner, in pixels.")
    color: Color
    size: int = Field(ge=8, le=200, description="Font height in pixels.")


class StylizeOp(_Op):
    """Apply an artistic filter to the whole image."""

    op: Literal["stylize"]
    style: Literal["sepia", "invert", "posterize", "sketch", "emboss", "contour", "sharpen"]


EditOp = Union[
    CropOp, RotateOp, ResizeOp, BlurOp, GrayscaleOp, FlipOp, BrightnessOp, ContrastOp, DrawBoxOp, DrawTextOp, StylizeOp
]
EDIT_OP_NAMES = tuple(m.model_fields["op"].annotation.__args__[0] for m in EditOp.__args__)


class ImageEditPlan(dspy.Signature):
    """Turn an image-editing instruction into a short list of concrete edit operations.

    The operations run in the order given, each on the result of the one before: after a crop or a
    resize, later coordinates refer to the new image. Coordinates are pixels, x to the right and y
    downwards from the top-left corner; boxes are [x1, y1, x2, y2]. Use only the operations the
    instruction asks for, with the numbers it gives; when it names a region without coordinates,
    choose a sensible box inside the image size given."""

    instruction: str = dspy.InputField(desc="What should be done to the image, in the user's words.")
    image_info: str = dspy.InputField(desc="The image's size as width x height in pixels, and its color mode.")
    ops: list[EditOp] = dspy.OutputField(desc=f"Between 1 and {MAX_EDIT_OPS} operations, applied in this order.")


class ChartSeries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=40, description="Legend name of this series.")
    values: list[float] = Field(max_length=MAX_CHART_POINTS, description="One number per category, in the same order.")


class ChartSpec(BaseModel):
    """A chart or diagram drawn with matplotlib."""

    model_config = ConfigDict(extra="forbid")

    chart_type: Literal["bar", "horizontal_bar", "line", "scatter", "pie", "flowchart"]
    title: str = Field(max_length=100)
    x_label: str = Field(max_length=60, description="Axis label under the x axis; empty for pie charts and flowcharts.")
    y_label: str = Field(max_length=60, description="Axis label beside the y axis; empty for pie charts and flowcharts.")
    categories: list[str] = Field(
        max_length=MAX_CHART_POINTS,
        description="Category names (bars, pie slices), x positions (line, scatter; numbers as text), or the steps of a flowchart in order.",
    )
    series: list[ChartSeries] = Field(max_length=6, description="Data series; one for pie charts, none for flowcharts.")


class ChartPlan(dspy.Signature):
    """Design the chart or diagram that shows what a picture request asks for.

    Use the numbers, names and labels given in the request exactly; do not invent data when the request
    gives it. Choose a bar chart to compare amounts, a line chart for change over time, a pie chart for
    shares of a whole, a scatter plot for pairs of numbers, and a flowchart for steps of a process."""

    prompt: str = dspy.InputField(desc="The picture the user asked for.")
    chart: ChartSpec = dspy.OutputField()


class DerivedVisualAnswer(dspy.Signature):
    """Answer a question about an image you cannot see, using facts that image tools extracted from it.

    The facts come from text recognition (OCR), a face detector, color statistics and, when known, a
    caption written for the image. Answer only what the facts support: quote text exactly as OCR read
    it, count only what a tool counted. If the facts do not settle the question, give the answer they
    best support and say in a few words what is uncertain. Never invent objects, people or text."""

    question: str = dspy.InputField()
    facts: str = dspy.InputField(desc="What the tools found in the image.")
    answer: str = dspy.OutputField(desc="A direct answer in one or two sentences.")


class VisualQuestion(dspy.Signature):
    """Look at the image and answer the question about it, precisely and briefly.

    Read text exactly as it is written, count carefully, and say so when the image does not show
    what is asked."""

    image: dspy.Image = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="A direct answer in one or two sentences.")


class FileQuestion(dspy.Signature):
    """Answer a question about a file from its text, converted to markdown.

    Use only this text. Copy numbers, names and dates exactly as they appear. If the text does not
    contain the answer, or is cut off before it, say so."""

    file_name: str = dspy.InputField()
    document: str = dspy.InputField(desc="The file's content as markdown; long files are cut off with a note.")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="A direct answer, with the figures or names it relies on.")


class SimulatedSearch(dspy.Signature):
    """Stand in for a web search engine that is not available here.

    Answer the search query from what you know, as a short search-result summary: key facts first
    (names, numbers, dates), two to four sentences. If you are unsure, say the information may be
    inaccurate. The reader is told this is a simulated search, not live results."""

    query: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="A short factual summary answering the query.")
