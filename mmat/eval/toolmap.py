"""GTA's tool names -> mmat's tool names, so ToolAcc compares like with like.

GTA agents call 14 named tools; mmat's CodeAgent writes Python and calls a smaller set of tools from it.
Several GTA tools collapse onto one mmat tool, and the purely computational ones (Calculator, Solver,
Plot) are not tools at all for a code agent: it computes, solves and plots in the Python it writes. Those
map to ``PYTHON`` and are dropped from the gold tool calls (a code agent cannot be asked to "call" them).
"""

from __future__ import annotations

__all__ = ["GTA_TOOL_MAP", "PYTHON", "map_gta_tool", "IGNORED_AGENT_TOOLS"]

PYTHON = None  # marker: "done in the agent's own code, no tool call"

# The one place the correspondence lives. Keys are GTA tool names exactly as GTA's dataset.json spells them.
GTA_TOOL_MAP: dict[str, str | None] = {
    # perception
    "OCR": "ocr",
    "ImageDescription": "visualizer",             # open VQA / captioning
    "RegionAttributeDescription": "visualizer",   # VQA about a region: the visualizer takes a question
    "TextToBbox": "objectlocation",               # open-vocabulary detection -> boxes
    # logic
    "CountGivenObject": "visualizer",             # "how many X": asked of the VQA tool, as MAT's agent does
    "MathOCR": "ocr",                             # formula recognition: mmat's OCR reads the text of the formula
    "Calculator": PYTHON,                         # arithmetic in the agent's code
    "Solver": PYTHON,                             # sympy in the agent's code
    "Plot": PYTHON,                               # matplotlib in the agent's code
    # operation
    "GoogleSearch": "ask_search_agent",
    "DrawBox": "image_edit",
    "AddText": "image_edit",
    # creativity
    "ImageStylization": "image_edit",
    "TextToImage": "image_generator",
}

# Tools every trajectory calls by construction: they say nothing about tool choice, so ToolAcc ignores them.
IGNORED_AGENT_TOOLS = frozenset({"final_answer"})


def map_gta_tool(name: str) -> tuple[bool, str | None]:
    """(known, mmat_name): known is False for a GTA name missing from GTA_TOOL_MAP; mmat_name None = PYTHON."""
    if name in GTA_TOOL_MAP:
        return True, GTA_TOOL_MAP[name]
    return False, None
