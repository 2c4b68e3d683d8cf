"""Import every built-in tool so it registers itself, in the order the agent's prompt lists them.

The names and order match MAT's agent (T3-Agent), so trajectories made by mmat and by MAT compare
tool for tool.
"""

from mmat.tools import (  # noqa: F401  (imported for their registration side effect)
    visualizer,
    ocr,
    faces,
    objects,
    segmentation,
    edit,
    generate,
    documents,
    search,
    final_answer,
)
from mmat.tools.registry import REGISTRY

__all__ = ["TOOL_NAMES"]

TOOL_NAMES: tuple[str, ...] = (
    "visualizer",
    "ocr",
    "facedetection",
    "objectlocation",
    "segmentation",
    "image_edit",
    "image_generator",
    "inspect_file_as_text",
    "ask_search_agent",
    "final_answer",
)

# Modules import each other (visualizer uses ocr and faces), so registration order is not prompt order:
# put the registry in TOOL_NAMES order, tools registered by users after these ones.
if set(TOOL_NAMES) - set(REGISTRY):  # a renamed tool would silently break comparability with MAT
    raise ImportError(f"built-in tools missing from the registry: {sorted(set(TOOL_NAMES) - set(REGISTRY))}")
_others = {n: t for n, t in REGISTRY.items() if n not in TOOL_NAMES}
_builtins = {n: REGISTRY[n] for n in TOOL_NAMES}
REGISTRY.clear()
REGISTRY.update(_builtins | _others)
