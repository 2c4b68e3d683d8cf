"""ToolAcc: did the agent call the tools the reference solution called?

Definition (per item; tool names are mmat names, GTA's mapped through ``GTA_TOOL_MAP``):

* ``G`` = the *set* of tools the reference solution called, ``C`` = the *set* of tools the agent called.
  Order and repetitions are ignored. ``final_answer`` is dropped from both (every run calls it), and so
  are GTA's computational tools (Calculator, Solver, Plot), which a code agent does in Python.
* precision = |C ∩ G| / |C|, recall = |C ∩ G| / |G|, exact = (C == G). An empty C gives precision 0.
* **Items whose G is empty** (the reference used no tool mmat has, e.g. only Calculator) are left out of
  ToolAcc: their fields are NULL, and the run reports how many there were (and how many of them the agent
  called a tool on) next to the figures.
* A solve that failed with an error (no outcome) scores precision = recall = 0, exact = false.
* Benchmarks without reference tool calls (GAIA) get no ToolAcc: the fields are NULL.

Per run, ``tool_precision``, ``tool_recall`` and ``tool_exact`` are means over the items with a non-empty G
(macro averages); ``tool_exact`` is the share of those items whose tool set matched exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from mmat.eval.toolmap import IGNORED_AGENT_TOOLS

__all__ = ["ToolScore", "tool_acc", "tool_sets"]


class ToolScore(BaseModel):
    """ToolAcc of one item (see the module docstring for the definition)."""

    precision: float
    recall: float
    exact: bool


def tool_sets(called: Iterable[str], gold: Iterable[str]) -> tuple[set[str], set[str]]:
    """(C, G) as ToolAcc compares them: sets, with ``final_answer`` dropped."""
    return ({n for n in called if n not in IGNORED_AGENT_TOOLS}, {n for n in gold if n not in IGNORED_AGENT_TOOLS})


def tool_acc(called: Iterable[str], gold: Iterable[str]) -> ToolScore:
    """Set precision/recall/exact-match of the tools called against the reference tool calls.

    Callers leave items with an empty G out (see the module docstring); for completeness, an empty G with an
    empty C scores 1/1/true and with a non-empty C 0/0/false."""
    c, g = tool_sets(called, gold)
    if not c and not g:
        return ToolScore(precision=1.0, recall=1.0, exact=True)
    if not c or not g:
        return ToolScore(precision=0.0, recall=0.0, exact=False)
    hit = len(c & g)
    return ToolScore(precision=hit / len(c), recall=hit / len(g), exact=c == g)
