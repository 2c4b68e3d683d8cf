"""GTA's tool metrics per category (P/O/L/C F1), computed as GTA's evaluator does in its end-to-end mode.

Categories: perception (OCR, ImageDescription, RegionAttributeDescription, TextToBbox), operation (DrawBox,
AddText, GoogleSearch), logic (Calculator, Solver, Plot, MathOCR, CountGivenObject), creativity (TextToImage,
ImageStylization). Per item, every *gold* call is a hit when its tool name appears among the item's predicted
calls (repeats of a gold tool each count); sums run over the whole data set (micro), then
precision = hits / predicted calls of the category, recall = hits / gold calls of the category and
F1 = 2PR / (P + R), with GTA's 1e-5 guards in the denominators.

mmat's agent calls mmat tools, so each predicted call is named back in GTA's terms: one-to-one tools map
directly (objectlocation -> TextToBbox, ask_search_agent -> GoogleSearch, image_generator -> TextToImage);
a tool standing for several GTA tools (visualizer: ImageDescription / RegionAttributeDescription /
CountGivenObject; ocr: OCR / MathOCR; image_edit: DrawBox / AddText / ImageStylization) takes the first of
those the item's gold calls use, else the first listed. Gold Calculator, Solver and Plot calls are left out
(a code agent computes, solves and plots in its own Python, so it can never call them) and counted apart,
which makes L F1 a figure over MathOCR and CountGivenObject only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

__all__ = [
    "CATEGORIES", "GTA_CATEGORY", "MMAT_TO_GTA", "CODE_ONLY_GTA_TOOLS", "CategoryCounts", "ToolCategoryScore",
    "gta_names_of", "category_counts", "category_f1",
]

CATEGORIES = ("perception", "operation", "logic", "creativity")
GTA_CATEGORY: dict[str, str] = {
    **dict.fromkeys(("OCR", "ImageDescription", "RegionAttributeDescription", "TextToBbox"), "perception"),
    **dict.fromkeys(("DrawBox", "AddText", "GoogleSearch"), "operation"),
    **dict.fromkeys(("Calculator", "Solver", "Plot", "MathOCR", "CountGivenObject"), "logic"),
    **dict.fromkeys(("TextToImage", "ImageStylization"), "creativity"),
}
CODE_ONLY_GTA_TOOLS = frozenset({"Calculator", "Solver", "Plot"})
# mmat tool -> the GTA tools it can stand for, first = the default reading
MMAT_TO_GTA: dict[str, tuple[str, ...]] = {
    "ocr": ("OCR", "MathOCR"),
    "visualizer": ("ImageDescription", "RegionAttributeDescription", "CountGivenObject"),
    "objectlocation": ("TextToBbox",),
    "ask_search_agent": ("GoogleSearch",),
    "image_edit": ("DrawBox", "AddText", "ImageStylization"),
    "image_generator": ("TextToImage",),
}


class CategoryCounts(BaseModel):
    """One category's counts over one item (or summed over a run)."""

    predicted: int = 0
    gold: int = 0
    hits: int = 0


class ToolCategoryScore(BaseModel):
    """Precision, recall and F1 of one category over a run (None when the run has no gold call of it)."""

    precision: float | None
    recall: float | None
    f1: float | None
    predicted: int
    gold: int
    hits: int


def gta_names_of(called: Sequence[str], gold_gta: Sequence[str]) -> list[str]:
    """mmat tool calls named in GTA's terms (see the module docstring); tools with no GTA twin are dropped."""
    gold = set(gold_gta)
    names: list[str] = []
    for name in called:
        options = MMAT_TO_GTA.get(name)
        if options:
            names.append(next((o for o in options if o in gold), options[0]))
    return names


def category_counts(called: Sequence[str], gold_gta: Sequence[str]) -> tuple[dict[str, CategoryCounts], int]:
    """Per-category counts of one item, and how many gold code-only calls (Calculator/Solver/Plot) were left out."""
    counts = {c: CategoryCounts() for c in CATEGORIES}
    kept_gold = [g for g in gold_gta if g not in CODE_ONLY_GTA_TOOLS]
    predicted = gta_names_of(called, kept_gold)
    for name in predicted:
        category = GTA_CATEGORY.get(name)
        if category:
            counts[category].predicted += 1
    for name in kept_gold:
        category = GTA_CATEGORY.get(name)
        if category:
            counts[category].gold += 1
            counts[category].hits += name in predicted
    return counts, len(gold_gta) - len(kept_gold)


def category_f1(per_item: Iterable[dict[str, CategoryCounts]]) -> dict[str, ToolCategoryScore]:
    """GTA's micro-averaged precision/recall/F1 per category."""
    total = {c: CategoryCounts() for c in CATEGORIES}
    for counts in per_item:
        for c in CATEGORIES:
            got = counts.get(c)
            if got is not None:
                total[c].predicted += got.predicted
                total[c].gold += got.gold
                total[c].hits += got.hits
    scores: dict[str, ToolCategoryScore] = {}
    for c, t in total.items():
        if t.gold == 0:
            scores[c] = ToolCategoryScore(precision=None, recall=None, f1=None, predicted=t.predicted, gold=0, hits=0)
            continue
        precision = t.hits / (t.predicted + 1e-5)
        recall = t.hits / t.gold
        f1 = 2 * precision * recall / (precision + recall + 1e-5)
        scores[c] = ToolCategoryScore(precision=precision, recall=recall, f1=f1, predicted=t.predicted, gold=t.gold, hits=t.hits)
    return scores
