"""ToolAcc: did the agent call the tools the reference solution called?

Definition (per item; tool names are mmat names, GTA's mapped through ``GTA_TOOL_MAP``):

* ``G`` = the *set* of tools the reference solution called, ``C`` = the *set* of tools the agent called.
  Order and repetitions are ignored. ``final_answer`` is dropped from both (every run calls it), and so
  are GTA's computational tools (Calculator, Solver, Plot), which a code agent does in Python.
* precision = |C ∩ G| / |C|, recall = |C ∩ G| / |G|, exact = (C == G).
* Edge cases: if both sets are empty, precision = recall = 1 and exact is true (no tool was needed and
  none was called). If exactly one set is empty — tools were needed and none was called, or none were
  needed and some were called — precision = recall = 0 and exact is false.
* A solve that failed with an error (no outcome) scores precision = recall = 0, exact = false.
* Benchmarks without reference tool calls (GAIA) get no ToolAcc: the fields are NULL and the items are
  left out of the averages.

Per run, ``tool_precision``, ``tool_recall`` and ``tool_exact`` are means over the items that have a
reference (macro averages); ``tool_exact`` is the share of items whose tool set matched exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from mmat.eval.toolmap import IGNORED_AGENT_TOOLS

__all__ = ["ToolScore", "tool_acc"]


class ToolScore(BaseModel):
    """ToolAcc of one item (see the module docstring for the definition)."""

    precision: float
    recall: float
    exact: bool


def tool_acc(called: Iterable[str], gold: Iterable[str]) -> ToolScore:
    """Set precision/recall/exact-match of the tools called against the reference tool calls."""
    c = {name for name in called if name not in IGNORED_AGENT_TOOLS}
    g = {name for name in gold if name not in IGNORED_AGENT_TOOLS}
    if not c and not g:
        return ToolScore(precision=1.0, recall=1.0, exact=True)
    if not c or not g:
        return ToolScore(precision=0.0, recall=0.0, exact=False)
    hit = len(c & g)
    return ToolScore(precision=hit / len(c), recall=hit / len(g), exact=c == g)
