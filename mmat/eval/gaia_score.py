"""GAIA answer scoring: the leaderboard's rule (``gaia``) and mmat's lenient variant (``gaia_lenient``).

``gaia_exact`` reproduces what GAIA's leaderboard ``question_scorer`` decides, case for case (written from
its description in /work/shared/specs/BENCHMARKS.md and a reading of the public scorer):

1. The ground truth parses with Python's ``float()`` (so ``"1e3"``, ``"+4"``, ``" 41 "``, ``"34_689"``,
   ``"nan"`` and ``"inf"`` all count as numbers): every ``$``, ``%`` and ``,`` is deleted from the answer and
   the rest goes through ``float()``; the answer is right iff the two floats are equal (no tolerance).
   An answer ``float()`` rejects becomes +infinity, as in the official scorer — so a ground truth of
   ``"inf"`` accepts any unparseable answer, and ``"nan"`` never matches anything. Units, words, currency
   signs other than ``$`` and trailing dots make an answer wrong (``"17 km"``, ``"€41"``, ``"1.456."``).
2. Otherwise, a ground truth holding ``,`` or ``;`` is a list: both strings are split on ``[,;]``; a
   different number of elements is wrong; a numeric ground-truth element is compared by rule 1, any other
   after deleting whitespace and lower-casing (punctuation kept).
3. Otherwise both are strings compared after deleting whitespace and ASCII punctuation and lower-casing.

``gaia_lenient`` is mmat's own, kinder rule (a currency sign before or a unit word after a number is
ignored, floats compare with a 1e-9 relative tolerance). It is never the default and never reported as
GAIA's figure.
"""

from __future__ import annotations

import math
import re
import string

__all__ = ["gaia_exact", "gaia_lenient", "parse_number_lenient"]

_LIST_SEPARATORS = re.compile(r"[,;]")
_NUMBER_NOISE = str.maketrans("", "", "$%,")
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_number(answer: str) -> float:
    """The official number normalisation: drop $ % , then float(); anything float() refuses is +inf."""
    try:
        return float(answer.translate(_NUMBER_NOISE))
    except ValueError:
        return math.inf


def _squash(text: str, *, drop_punctuation: bool) -> str:
    squashed = re.sub(r"\s", "", text).lower()
    return squashed.translate(_ASCII_PUNCTUATION) if drop_punctuation else squashed


def gaia_exact(answer: str | None, ground_truth: str) -> bool:
    """GAIA's leaderboard decision for one answer (see the module docstring for the three rules)."""
    answer = "None" if answer is None else answer  # the official scorer scores a missing answer as "None"
    if _is_float(ground_truth):
        return _as_number(answer) == float(ground_truth)
    if "," in ground_truth or ";" in ground_truth:
        gt_parts = _LIST_SEPARATORS.split(ground_truth)
        answer_parts = _LIST_SEPARATORS.split(answer)
        if len(gt_parts) != len(answer_parts):
            return False
        return all(
            _as_number(a) == float(g) if _is_float(g) else _squash(a, drop_punctuation=False) == _squash(g, drop_punctuation=False)
            for a, g in zip(answer_parts, gt_parts)
        )
    return _squash(answer, drop_punctuation=True) == _squash(ground_truth, drop_punctuation=True)


# --- mmat's lenient variant ------------------------------------------------------------------------------
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_CURRENCY_PREFIX = re.compile(r"^(?:[€£¥₹]|[A-Z]{3}\s)\s*")
# one short unit after a number ("17 km", "3 m/s", "20°C", "5 kg."); not a phrase ("41 is my answer")
_UNIT_SUFFIX = re.compile(r"^\s*(?:[A-Za-zµ°²³]{1,6}(?:/[A-Za-z]{1,4})?)?\.?\s*$")


def parse_number_lenient(text: str) -> float | None:
    """The number a short answer states, or None: strips $, %, commas, a currency sign and a trailing unit."""
    cleaned = text.strip().translate(_NUMBER_NOISE)
    cleaned = _CURRENCY_PREFIX.sub("", cleaned.strip())
    match = _NUMBER.match(cleaned)
    if match is None or not _UNIT_SUFFIX.match(cleaned[match.end():]):
        return None
    value = float(match.group(0))
    return value if math.isfinite(value) else None


def _lenient_numbers_equal(answer: str, reference: str) -> bool:
    value = parse_number_lenient(answer)
    return value is not None and math.isclose(value, float(reference), rel_tol=1e-9, abs_tol=1e-12)


def gaia_lenient(answer: str | None, ground_truth: str) -> bool:
    """mmat's lenient GAIA-style rule: like ``gaia_exact`` but units/currency words ignored, float tolerance."""
    answer = answer or ""
    reference = ground_truth.strip()
    if _is_float(reference):
        return _lenient_numbers_equal(answer, reference)
    if "," in reference or ";" in reference:
        ref_parts, answer_parts = _LIST_SEPARATORS.split(reference), _LIST_SEPARATORS.split(answer)
        if len(ref_parts) != len(answer_parts):
            return False
        return all(
            _lenient_numbers_equal(a, r.strip()) if _is_float(r.strip())
            else _squash(a, drop_punctuation=False) == _squash(r, drop_punctuation=False)
            for a, r in zip(answer_parts, ref_parts)
        )
    return _squash(answer, drop_punctuation=True) == _squash(reference, drop_punctuation=True)
