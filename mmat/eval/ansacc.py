"""Answer accuracy (AnsAcc): three scoring rules, and which items each one counts.

* ``mat`` — the rule MAT (T3-Agent) used for its GTA numbers: an answer is right when, for every whitelist
  group, some alias of the group is a case-insensitive substring of the answer. The blacklist is ignored.
* ``gta`` — GTA's official rule: each whitelist group must match as a whole word (regex ``\\b`` around
  the alternatives, case-insensitive), and any blacklist alias matching the same way rejects the answer.
  Reproduced as GTA's evaluator writes it, quirks included (``\\b`` next to a non-word character such as
  ``$`` or ``%`` needs a word character on the other side).
* ``gaia`` — GAIA's normalised scorer: a numeric reference is compared as a float after stripping
  ``$``/``%``/commas (and, in mmat, a currency sign before or a unit word after the number); a reference
  containing ``,`` or ``;`` is a list compared element by element; any other string is compared after
  lowercasing and removing whitespace and punctuation.

Which items count: GTA AnsAcc counts only whitelist items (subjective and image-generation items are
``counted=False``: GTA scores them by embedding similarity or tool arguments, which mmat does not claim
to reproduce). GAIA-kind items count under ``gaia`` and, for reference, ``mat`` (substring of the
reference). Items with no textual answer never count.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

from pydantic import BaseModel, Field

from mmat.eval.items import EvalItem

__all__ = ["AnswerScore", "ans_acc_mat", "ans_acc_gta", "ans_acc_gaia", "parse_number", "score_answer", "SCORERS"]

SCORERS = ("mat", "gta", "gaia")


class AnswerScore(BaseModel):
    """AnsAcc of one answer: whether the item counts, and 1.0/0.0 per applicable scorer."""

    counted: bool = Field(description="Whether AnsAcc counts this item at all.")
    scores: dict[str, float] = Field(default_factory=dict, description="scorer name -> 1.0 (right) or 0.0.")


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


# --- GAIA: normalised -------------------------------------------------------------------------------------
_NUMBER = re.compile(
    r"""[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"""
)
_CURRENCY_PREFIX = re.compile(r"^(?:[€£¥₹]|[A-Z]{3}\s)\s*")
# a unit after a number: words, degree signs, superscripts, slashes, dots ("17 km", "3 m/s", "20°C", "5 kg.")
_UNIT_SUFFIX = re.compile(r"^\s*[A-Za-zµ°²³/.\s]*$")


def parse_number(text: str) -> float | None:
    """The number a short answer states, or None: strips $, %, commas, a currency sign and a trailing unit."""
    cleaned = text.strip()
    for char in ("$", "%", ","):
        cleaned = cleaned.replace(char, "")
    cleaned = _CURRENCY_PREFIX.sub("", cleaned.strip())
    match = _NUMBER.match(cleaned)
    if match is None or not _UNIT_SUFFIX.match(cleaned[match.end():]):
        return None
    value = float(match.group(0))
    return value if math.isfinite(value) else None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalize_str(text: str, *, remove_punct: bool = True) -> str:
    squashed = re.sub(r"\s", "", text).lower()
    return squashed.translate(str.maketrans("", "", string.punctuation)) if remove_punct else squashed


def _numbers_equal(prediction: str, reference: str) -> bool:
    value = parse_number(prediction)
    return value is not None and math.isclose(value, float(reference), rel_tol=1e-9, abs_tol=1e-12)


def _element_equal(prediction: str, reference: str) -> bool:
    """One list element: a number compares as a float; text keeps its punctuation (GAIA's list rule)."""
    if _is_float(reference.strip()):
        return _numbers_equal(prediction, reference.strip())
    return _normalize_str(prediction, remove_punct=False) == _normalize_str(reference, remove_punct=False)


def ans_acc_gaia(prediction: str, reference: str) -> bool:
    """GAIA's question_scorer: numbers as floats, ','/';' lists element-wise, strings normalised."""
    reference = reference.strip()
    if _is_float(reference):
        return _numbers_equal(prediction, reference)
    if any(sep in reference for sep in ",;"):
        ref_elems = re.split(r"[,;]", reference)
        pred_elems = re.split(r"[,;]", prediction)
        if len(ref_elems) != len(pred_elems):
            return False
        return all(_element_equal(p, r) for p, r in zip(pred_elems, ref_elems))
    return _normalize_str(prediction) == _normalize_str(reference)


# --- per item ----------------------------------------------------------------------------------------------
def score_answer(item: EvalItem, prediction: str | None) -> AnswerScore:
    """Every AnsAcc rule that applies to the item's answer kind; a missing prediction scores 0 where counted."""
    pred = prediction or ""
    gt: Any = item.gt
    if item.answer_kind == "whitelist":
        whitelist, blacklist = gt["whitelist"], gt.get("blacklist")
        return AnswerScore(
            counted=True,
            scores={"mat": float(ans_acc_mat(pred, whitelist)), "gta": float(ans_acc_gta(pred, whitelist, blacklist))},
        )
    if item.answer_kind == "gaia":
        reference = str(gt)
        return AnswerScore(
            counted=True,
            scores={"gaia": float(ans_acc_gaia(pred, reference)), "mat": float(ans_acc_mat(pred, [[reference]]))},
        )
    return AnswerScore(counted=False)
