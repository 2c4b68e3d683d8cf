"""Failures that become rows, and the run goes on: small functions any scheduler can use.

A unit of work (today a synth seed) ends ``done`` (its rows flushed), ``failed`` (an LM stage ran out of
retries or its reply could not be used: a stable ``error_code`` and a one-line ``error``; its rows are
not written, so a rerun redoes it cleanly) or ``interrupted`` (Ctrl-C before it finished: nothing
written, redone on rerun). Failures the user must fix first (a 4xx, a missing key) are ``fatal``: the
run stops with their message instead of failing every remaining unit the same way.

The vocabulary shared by the progress bar, the summary line and the store:
generated / rejected-by-rules / rejected-by-verifier / failed-by-error / solved.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mmat.config import Settings
from mmat.preflight import Failure, describe_failure

__all__ = ["SeedFailure", "classify", "unparsable_failure", "seeds_to_run", "top_reasons", "exit_status", "VOCABULARY",
           "live_line", "task_outcome", "failure_record", "FRESH_ON_RETRY", "EXIT_PARTIAL"]

VOCABULARY = ("generated", "rejected-by-rules", "rejected-by-verifier", "failed-by-error", "solved")
# Failures whose replies arrived (and were cached) but were unusable: a retry must not reuse them.
FRESH_ON_RETRY = frozenset({"unparsable-reply", "empty-reply", "malformed-reply"})
EXIT_PARTIAL = 1  # the exit status of a run that produced nothing, or failed for too many seeds


@dataclass(frozen=True)
class SeedFailure:
    """A failed unit of work: which seed, the Failure (code, message, fatal)."""

    seed_idx: int
    failure: Failure


def classify(exc: BaseException, settings: Settings | None, command: str | None) -> Failure:
    """The Failure behind an exception a stage raised; a bug (not an LM or reply problem) is re-raised."""
    failure = describe_failure(exc, settings, command)
    if failure is None:
        raise exc
    return failure


def unparsable_failure(error: str) -> Failure:
    """A stage whose reply the program could not read (it caught the ModelOutputError itself)."""
    code = "empty-reply" if "empty or null response" in error else "unparsable-reply"
    return Failure(code, " ".join(error.split())[:300])


def seeds_to_run(statuses: dict[int, str], indices: Iterable[int], *, retry_failed: bool) -> tuple[list[int], int, int]:
    """(indices to run, done before, failed before and skipped) from the stored status per seed.
    Done seeds are skipped; failed ones are retried unless ``retry_failed`` is off; interrupted or
    unknown ones always run."""
    todo, done, skipped = [], 0, 0
    for idx in indices:
        status = statuses.get(idx)
        if status == "done":
            done += 1
        elif status == "failed" and not retry_failed:
            skipped += 1
        else:
            todo.append(idx)
    return todo, done, skipped


def top_reasons(codes: Counter[str], limit: int = 3) -> str:
    """``rate-limited 3, timeout 1`` (most frequent first)."""
    return ", ".join(f"{code} {n}" for code, n in codes.most_common(limit))


def live_line(outcomes: Counter[str] | dict[str, int]) -> str:
    """The progress bar's description: the shared vocabulary, in order."""
    c = Counter(outcomes)
    return " · ".join(f"{name} {c[name]}" for name in VOCABULARY)


def exit_status(seeds_run: int, seeds_failed: int, produced: int, max_failed_share: float) -> int:
    """0, or EXIT_PARTIAL when seeds ran and nothing was produced, or when more than ``max_failed_share``
    of the seeds run failed by error (the rule the README states)."""
    if seeds_run == 0:
        return 0
    if produced == 0 and seeds_failed > 0:
        return EXIT_PARTIAL
    return EXIT_PARTIAL if seeds_failed / seeds_run > max_failed_share else 0


def failure_record(run_id: str, seed: Any, failure: Failure, finished_at: Any, attempts: int) -> dict[str, Any]:
    """The ``synth_seeds`` row of a failed seed."""
    return {"run_id": run_id, "seed_idx": seed.index, "domain": seed.domain.name, "status": "failed", "n_specs": 0,
            "n_tasks": 0, "counts": {}, "error_code": failure.code, "error": failure.message, "attempts": attempts,
            "finished_at": finished_at}


def task_outcome(row: dict[str, Any]) -> str | None:
    """Which shared word a stored task row counts under (None: only 'generated', e.g. verified, unsolved)."""
    status, reason = row.get("status"), row.get("status_reason") or ""
    if status == "solved":
        return "solved"
    if status == "rejected":
        return "rejected-by-verifier" if reason.startswith("query-file verifier") else "rejected-by-rules"
    if status == "failed":
        if not reason.startswith("none of"):
            return "failed-by-error"  # a verifier's reply could not be read
        match = re.search(r"none of (\d+) trajectories.*\((\d+) rejected by the rules\)", reason)
        return "rejected-by-rules" if match and match.group(1) == match.group(2) else "rejected-by-verifier"
    return None
