"""Answer accuracy (AnsAcc): the scoring rules, and which items each one counts.

* ``mat`` — the rule MAT (T3-Agent) and MATRIX used for their GTA numbers: an answer is right when, for
  every whitelist group, some alias of the group is a case-insensitive substring of the answer. The
  blacklist is ignored. Counts GTA's whitelist (objective) items only.
* ``gta`` — GTA's word-boundary rule on whitelist items only: each whitelist group must match as a whole
  word (regex ``\\b`` around the alternatives, case-insensitive) and any blacklist alias matching the same
  way rejects the answer. Quirks included (``\\b`` next to ``$`` or ``%`` needs a word character on the
  other side). Counts the whitelist items only, as mmat always did.
* ``gta_official`` — GTA's own AnsAcc: the ``gta`` rule on objective items plus, for every subjective item,
  partial credit = the largest cosine similarity between the answer's sentence embedding and a reference's,
  clipped at 0. The denominator is objective + subjective items. Which embedding model scored is recorded
  with the run (GTA's is all-mpnet-base-v2; see ``mmat.eval.similarity``).
* ``gaia`` — GAIA's leaderboard ``question_scorer`` exactly (``mmat.eval.gaia_score.gaia_exact``).
* ``gaia_lenient`` — mmat's kinder variant (units and currency words ignored, float tolerance); stored
  beside ``gaia``, never reported as GAIA's figure.

Items with no textual answer (GTA image generation, GAIA's hidden test answers) are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from mmat.eval.gaia_score import gaia_exact, gaia_lenient, parse_number_lenient
from mmat.eval.items import EvalItem

__all__ = [
    "AnswerScore", "ans_acc_mat", "ans_acc_gta", "ans_acc_gaia", "ans_acc_gaia_lenient", "parse_number",
    "score_answer", "SCORERS", "Similarity",
]

SCORERS = ("mat", "gta", "gta_official", "gaia", "gaia_lenient")

# (answer, references) -> the best cosine similarity clipped at 0 (``mmat.eval.similarity``)
Similarity = Callable[[str, Sequence[str]], float]


class AnswerScore(BaseModel):
    """AnsAcc of one answer: whether the item counts, and a score in [0, 1] per applicable scorer."""

    counted: bool = Field(description="Whether AnsAcc counts this item at all.")
    scores: dict[str, float] = Field(default_factory=dict, description="scorer name -> 1.0/0.0 (or partial credit).")


# --- MAT: substring ------------------------------------------------------------------------------------
def ans_acc_mat(prediction: str, whitelist: list[list[str]]) -> bool:
    """Every whitelist group has an alias that is a case-insensitive substring of the prediction."""
    if not whitelist:
        return False  # an empty reference would make every answer right; loaders reject it, so refuse here too
    text = prediction.lower()
    return all(any(alias.lower() in text for alias in group) for group in whitelist)


# --- GTA: word boundaries + blacklist ----------------------------------------------------------------------
def _word_pattern(aliases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(a) for a in aliases) + r")\b", re.IGNORECASE)


def ans_acc_gta(prediction: str, whitelist: list[list[str]], blacklist: list[list[str]] | None = None) -> bool:
    """GTA's official rule: each whitelist group matches on word boundaries and no blacklist alias does."""
    if not whitelist:
        return False
    if not all(_word_pattern(group).search(prediction) for group in whitelist):
        return False
    banned = [alias for group in (blacklist or []) for alias in group]
    return not (banned and _word_pattern(banned).search(prediction))


# --- GAIA ----------------------------------------------------------------------------------------------------
def ans_acc_gaia(prediction: str | None, reference: str) -> bool:
    """GAIA's leaderboard question_scorer (exact; see ``mmat.eval.gaia_score``)."""
    return gaia_exact(prediction, reference)


def ans_acc_gaia_lenient(prediction: str | None, reference: str) -> bool:
    """mmat's lenient GAIA-style rule (units/currency ignored, float tolerance); never the default."""
    return gaia_lenient(prediction, reference)


parse_number = parse_number_lenient  # the lenient rule's number reader, kept under its old name


# --- per item ----------------------------------------------------------------------------------------------
def score_answer(item: EvalItem, prediction: str | None, *, similarity: Similarity | None = None) -> AnswerScore:
    """Every AnsAcc rule that applies to the item's answer kind; a missing prediction scores 0 where counted.

    Subjective items need ``similarity``; without one they are not counted (the caller says why)."""
    gt: Any = item.gt
    if prediction is None:
        return _zero(item, similarity)
    if item.answer_kind == "whitelist":
        whitelist, blacklist = gt["whitelist"], gt.get("blacklist")
        gta = float(ans_acc_gta(prediction, whitelist, blacklist))
        return AnswerScore(
            counted=True, scores={"mat": float(ans_acc_mat(prediction, whitelist)), "gta": gta, "gta_official": gta}
        )
    if item.answer_kind == "subjective":
        if similarity is None:
            return AnswerScore(counted=False)
        credit = similarity(prediction, list(gt)) if prediction.strip() else 0.0
        return AnswerScore(counted=True, scores={"gta_official": max(0.0, float(credit))})
    if item.answer_kind == "gaia":
        reference = str(gt)
        return AnswerScore(counted=True, scores={
            "gaia": float(ans_acc_gaia(prediction, reference)),
            "gaia_lenient": float(ans_acc_gaia_lenient(prediction, reference)),
            "mat": float(ans_acc_mat(prediction, [[reference]])),
        })
    return AnswerScore(counted=False)


def _zero(item: EvalItem, similarity: Similarity | None) -> AnswerScore:
    """No answer at all (a failed solve): every rule that would count the item scores 0."""
    names = {
        "whitelist": ("mat", "gta", "gta_official"),
        "subjective": ("gta_official",) if similarity is not None else (),
        "gaia": ("gaia", "gaia_lenient", "mat"),
    }.get(item.answer_kind, ())
    return AnswerScore(counted=bool(names), scores={name: 0.0 for name in names})
