"""Why a task was rejected or failed, as a code to group by (``tasks.reason_code``) next to the text.

``tasks.status_reason`` keeps the full text (it names files, numbers and the verifier's words, so no
two are alike); the code is one of a short fixed list, derived from the text's leading words, which
mmat itself writes (the programs' reason templates), never from model output.
"""

from __future__ import annotations

__all__ = ["REASON_CODES", "reason_code", "reason_code_sql"]

# (status or None for any, leading words of status_reason, code); the first match wins.
REASON_CODES: tuple[tuple[str | None, str, str], ...] = (
    (None, "names no tool", "no_offered_tool"),
    (None, "duplicate of another query", "duplicate_in_batch"),
    (None, "more than the", "over_query_limit"),
    (None, "near-duplicate", "near_duplicate"),
    (None, "shares a 13-gram", "benchmark_overlap"),
    (None, "files:", "files_failed"),
    (None, "rules:", "rules_rejected"),
    ("failed", "query-file verifier:", "verifier_error"),
    (None, "query-file verifier:", "verifier_rejected"),
    (None, "none of", "no_verified_trajectory"),
)
OTHER = "other"
# Rejected before any file was made: these specs never became tasks the later stages saw.
SPEC_CODES = ("no_offered_tool", "duplicate_in_batch", "over_query_limit", "near_duplicate", "benchmark_overlap")


def reason_code(status: str | None, reason: str | None) -> str | None:
    """The code of a status reason (None when there is no reason)."""
    if not reason:
        return None
    for want_status, prefix, code in REASON_CODES:
        if (want_status is None or want_status == status) and reason.startswith(prefix):
            return code
    return OTHER


def reason_code_sql(status: str = "status", reason: str = "status_reason") -> str:
    """The same rule as a SQL CASE expression (for migrations and views)."""
    arms = []
    for want_status, prefix, code in REASON_CODES:
        cond = f"starts_with({reason}, '{prefix}')"
        if want_status is not None:
            cond = f"{status} = '{want_status}' AND {cond}"
        arms.append(f"WHEN {cond} THEN '{code}'")
    return f"CASE WHEN {reason} IS NULL OR {reason} = '' THEN NULL {' '.join(arms)} ELSE '{OTHER}' END"
