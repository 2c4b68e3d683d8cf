"""``image_generator``: make a picture from a prompt.

With text-to-image weights on disk (and diffusers installed) a diffusion pipeline paints it. Offline,
the text model designs a chart or diagram as a typed :class:`~mmat.signatures.tools.ChartSpec` and
matplotlib renders it (Agg, through ``Figure`` objects, so no global pyplot state is touched and
calls from several threads do not interfere).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

from mmat.tools.context import ToolContext
from mmat.tools.edit import lm_status
from mmat.tools.errors import ToolArgumentError, ToolError, ToolUnavailableError
from mmat.tools.registry import ToolEnv, tool
from mmat.tools.weights import find_weights, weights_status

if TYPE_CHECKING:  # pragma: no cover
    from mmat.signatures.tools import ChartSpec

__all__ = ["image_generator", "render_chart", "TEXT2IMAGE_ALIAS", "TEXT2IMAGE_REPOS"]

TEXT2IMAGE_ALIAS = "text2image"
TEXT2IMAGE_REPOS = ("stabilityai/sd-turbo", "stabilityai/sdxl-turbo")
FIGURE_SIZE = (8, 5)  # inches; at 100 dpi an 800x500 image
DPI = 100

_pipelines: dict[Path, Any] = {}
_pipelines_lock = threading.Lock()


@tool(returns="the file name of the new image")
def image_generator(prompt: Annotated[str, "What the picture should show, with any data, labels and title it needs."]) -> str:
    """Create a new image from a description, e.g. a chart of given numbers or a diagram of steps (and pictures where a text-to-image model is installed)."""


def diffusers_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("diffusers") is None:
        return False, "diffusers is not installed (and no text-to-image weights): pictures other than charts are unavailable"
    return weights_status(env.settings, TEXT2IMAGE_ALIAS, TEXT2IMAGE_REPOS, "text-to-image")


def chart_status(env: ToolEnv) -> tuple[bool, str]:
    if importlib.util.find_spec("matplotlib") is None:
        return False, "matplotlib is not installed"
    available, reason = lm_status(env)
    if not available:
        return False, "needs a text model: give the tool host an lm (the teacher) to design the chart"
    return True, f"the text model ({env.lm_name}) designs a typed chart/diagram spec; matplotlib renders it"


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(c) for c in labels]
    except ValueError:
        return None


def _flowchart(ax: Any, steps: list[str]) -> None:
    """Steps left to right in rounded boxes joined by arrows (two rows when there are many)."""
    import textwrap

    per_row = 4 if len(steps) > 4 else max(1, len(steps))
    rows = (len(steps) + per_row - 1) // per_row
    ax.set_xlim(0, per_row)
    ax.set_ylim(0, rows)
    ax.axis("off")
    centres = [(i % per_row + 0.5, rows - (i // per_row) - 0.5) for i in range(len(steps))]
    for (x, y), text in zip(centres, steps):
        ax.text(x, y, textwrap.fill(text, 16), ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round,pad=0.6", "facecolor": "#dbe9f6", "edgecolor": "#2f5d8a"})
    for (x0, y0), (x1, y1) in zip(centres, centres[1:]):
        ax.annotate("", xy=(x1 - 0.32, y1) if y0 == y1 else (x1, y1 + 0.25),
                    xytext=(x0 + 0.32, y0) if y0 == y1 else (x0, y0 - 0.25),
                    arrowprops={"arrowstyle": "->", "color": "#2f5d8a", "lw": 1.5})


def render_chart(spec: ChartSpec, out: Path | BinaryIO) -> str:
    """Draw ``spec`` into ``out`` (a PNG path or binary file object); returns a one-line summary of what was drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    ax = fig.add_subplot()
    labels = [c for c in spec.categories]
    series = [s for s in spec.series if s.values]
    if spec.chart_type == "flowchart":
        if not labels:
            raise ToolError("image_generator: the flowchart has no steps; describe the steps in the prompt")
        _flowchart(ax, labels)
        drawn = f"flowchart of {len(labels)} steps"
    else:
        if not series:
            raise ToolError("image_generator: the chart has no data; put the numbers to plot in the prompt")
        n = min([len(labels) or len(series[0].values)] + [len(s.values) for s in series])
        labels = labels[:n] or [str(i + 1) for i in range(n)]
        if spec.chart_type == "pie":
            ax.pie(series[0].values[:n], labels=labels, autopct="%1.0f%%", startangle=90)
            ax.axis("equal")
        elif spec.chart_type in ("bar", "horizontal_bar"):
            width = 0.8 / len(series)
            for k, s in enumerate(series):
                offsets = [i + (k - (len(series) - 1) / 2) * width for i in range(n)]
                plot = ax.barh if spec.chart_type == "horizontal_bar" else ax.bar
                plot(offsets, s.values[:n], width, label=s.name)
            (ax.set_yticks if spec.chart_type == "horizontal_bar" else ax.set_xticks)(range(n), labels)
        else:
            xs = _numeric(labels)
            for s in series:
                x = xs if xs is not None else list(range(n))
                if spec.chart_type == "line":
                    ax.plot(x, s.values[:n], marker="o", label=s.name)
                else:
                    ax.scatter(x, s.values[:n], label=s.name)
            if xs is None:
                ax.set_xticks(range(n), labels)
        if spec.chart_type != "pie":
            ax.set_xlabel(spec.x_label)
            ax.set_ylabel(spec.y_label)
        if len(series) > 1 and spec.chart_type != "pie":
            ax.legend()
        drawn = f"{spec.chart_type.replace('_', ' ')} chart, {len(series) if spec.chart_type != 'pie' else 1} series x {n} points"
    ax.set_title(spec.title)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return drawn


@image_generator.backend("diffusers", check=diffusers_status)
def _generate_diffusers(ctx: ToolContext, prompt: str) -> str:
    import torch

    found = find_weights(ctx.settings, TEXT2IMAGE_ALIAS, TEXT2IMAGE_REPOS)
    if found is None:  # removed between the availability check and now
        raise ToolUnavailableError(f"image_generator: {diffusers_status(ctx.env)[1]}")
    with _pipelines_lock:
        if found.path not in _pipelines:
            from diffusers import AutoPipelineForText2Image

            _pipelines[found.path] = AutoPipelineForText2Image.from_pretrained(found.path, local_files_only=True)
    generator = torch.Generator().manual_seed(ctx.settings.seed)
    image = _pipelines[found.path](prompt=prompt[:500], num_inference_steps=4, guidance_scale=0.0, generator=generator).images[0]
    with ctx.new_output("generated") as (name, out):
        image.save(out, format="PNG")
    return f"Saved generated image to {name} ({image.width}x{image.height}, text-to-image model)."


@image_generator.backend("matplotlib-chart", check=chart_status)
def _generate_chart(ctx: ToolContext, prompt: str) -> str:
    from mmat.signatures.tools import ChartPlan

    if not prompt.strip():
        raise ToolArgumentError("image_generator: the prompt is empty; describe the image to create")
    spec = ctx.predict("image_generator", ChartPlan, prompt=prompt).chart
    with ctx.new_output("generated") as (name, out):  # removed again if drawing fails
        drawn = render_chart(spec, out)
    return f"Saved generated image to {name}: {drawn}, titled {spec.title!r} (drawn with matplotlib)."
