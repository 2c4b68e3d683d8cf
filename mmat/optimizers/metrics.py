"""Metrics built from mmat's own judgments, one per optimizable program.

Every metric follows GEPA's protocol in dspy 3.4.1, which the other optimizers accept too:
``metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction(score, feedback)``.
The score is in [0, 1]; BootstrapFewShot and MIPROv2 compare it with a threshold, Evaluate averages it,
and GEPA reads ``feedback`` (the verifier's reasons, the file errors, the label's note) to rewrite
instructions. ``pred`` is what an optimization target returns: ``Prediction(result=..., error=...)``.

Metrics that need a verdict take a :class:`~mmat.optimizers.judges.Judge` by keyword; bind it with
``functools.partial`` (the runner does) so the optimizers see the five-argument protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy
import numpy as np

from mmat.errors import ModelOutputError
from mmat.eval.ansacc import ans_acc_gaia
from mmat.programs.file_generator import FileGenResult
from mmat.programs.query_generator import QueryGenResult
from mmat.programs.trajectory import Trajectory

__all__ = [
    "query_generator_metric",
    "file_generator_metric",
    "agent_metric",
    "verifier_agreement",
    "near_duplicate_flags",
    "DIVERSITY_WEIGHT",
]

DIVERSITY_WEIGHT = 0.5  # a batch of all near-duplicates loses half a point on top of what the verifier says
MAX_QUOTE = 160


def _scored(score: float, feedback: str) -> dspy.Prediction:
    return dspy.Prediction(score=float(min(1.0, max(0.0, score))), feedback=feedback)


def _quote(text: Any) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE] + "...")


def _failed(pred: Any, what: str) -> dspy.Prediction | None:
    """Score 0 for a prediction whose model answer was unreadable (or that is missing altogether)."""
    error = getattr(pred, "error", None) if pred is not None else "no output"
    result = getattr(pred, "result", None) if pred is not None else None
    if error is None and result is not None:
        return None
    return _scored(0.0, f"The {what} failed: {error or 'it returned nothing'}. Answer in exactly the requested fields.")


# --- query generator ---------------------------------------------------------------------------------
def near_duplicate_flags(queries: Sequence[str], examples: Sequence[str], threshold: float, *,
                         embedder: Any = None) -> list[str | None]:
    """Per query: None, or why it is a near-duplicate (of an earlier query in the batch, or of an example)."""
    if not queries:
        return []
    from mmat.embed import Embedder, near_duplicate_mask

    embedder = embedder or Embedder.shared()
    vectors = embedder.embed(list(queries) + list(examples))
    mine, shown = vectors[: len(queries)], vectors[len(queries):]
    within = near_duplicate_mask(mine, None, threshold)
    reasons: list[str | None] = []
    for i, vec in enumerate(mine):
        if within[i]:
            earlier = int(np.argmax(mine[:i] @ vec)) + 1
            reasons.append(f"nearly repeats request {earlier}")
        elif len(shown) and float((shown @ vec).max()) >= threshold:
            reasons.append(f"paraphrases the example {_quote(examples[int(np.argmax(shown @ vec))])}")
        else:
            reasons.append(None)
    return reasons


def query_generator_metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                           pred_trace: Any = None, *, judge: Any, dedup_threshold: float = 0.92,
                           diversity_weight: float = DIVERSITY_WEIGHT, embedder: Any = None) -> dspy.Prediction:
    """Share of generated specs the query-file verifier passes, minus ``diversity_weight`` x the share of
    near-duplicates (of each other or of the seed examples). Rejected specs (unknown tools, exact
    duplicates) count as generated and failed."""
    failed = _failed(pred, "query generation")
    if failed is not None:
        return failed
    result: QueryGenResult = pred.result
    n_generated = len(result.specs) + len(result.rejected)
    if n_generated == 0:
        return _scored(0.0, "No request was written. Write the number of requests asked for.")
    notes: list[str] = [f"Request {_quote(r.query)} was dropped: it {r.reason}." for r in result.rejected]
    if result.invalid_tools:
        notes.append(f"Tool names not in the tools list were used: {', '.join(sorted(set(result.invalid_tools)))}.")
    passed = 0
    for i, spec in enumerate(result.specs, 1):
        try:
            verdict = judge.verify_spec(spec)
        except ModelOutputError as e:
            notes.append(f"Request {i} could not be judged (the verifier's reply was unreadable: {e}).")
            continue
        passed += int(verdict.passed)
        why = "; ".join(verdict.reasons) or "no reasons given"
        notes.append(f"Request {i} {_quote(spec.query)}: the verifier {'passed' if verdict.passed else 'rejected'} it ({why}).")
    example_queries = [getattr(e, "query", str(e)) for e in (getattr(gold, "examples", None) or [])]
    dups = near_duplicate_flags([s.query for s in result.specs], example_queries, dedup_threshold, embedder=embedder)
    notes += [f"Request {i} {why}: vary the task, the files and the tools." for i, why in enumerate(dups, 1) if why]
    n_dups = sum(1 for d in dups if d)
    score = passed / n_generated - diversity_weight * n_dups / n_generated
    head = f"{passed} of {n_generated} requests passed the verifier; {n_dups} near-duplicate(s)."
    return _scored(score, " ".join([head, *notes]))


# --- file generator --------------------------------------------------------------------------------------
def file_generator_metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                          pred_trace: Any = None) -> dspy.Prediction:
    """Share of the spec's file needs that ended with a usable file (no FileFailure)."""
    failed = _failed(pred, "file generation")
    if failed is not None:
        return failed
    result: FileGenResult = pred.result
    n_needs = len(gold.spec.file_needs)
    if n_needs == 0:
        return _scored(1.0, "The request needs no files.")
    made = n_needs - len({f.need_index for f in result.failures})
    notes = [f"{made} of {n_needs} files were made."]
    notes += [f"{f.file_name} failed: {f.reason}" for f in result.failures]
    retried: dict[str, list[str]] = {}
    for attempt in result.attempts:
        if attempt.error is not None:
            retried.setdefault(attempt.file_name, []).append(attempt.error)
    for name, errors in retried.items():
        if name not in {f.file_name for f in result.failures}:
            notes.append(f"{name} needed {len(errors) + 1} attempts; the first failed with: {_quote(errors[0])}")
    return _scored(made / n_needs, " ".join(notes))


# --- agent ------------------------------------------------------------------------------------------------
def agent_metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                 pred_trace: Any = None, *, judge: Any) -> dspy.Prediction:
    """Trajectory-verifier pass; on tasks with a known answer, the mean of that and GAIA-style answer
    correctness (``ans_acc_gaia``)."""
    failed = _failed(pred, "agent run")
    if failed is not None:
        return failed
    trajectory: Trajectory = pred.result
    expected = getattr(gold, "expected_answer", None)
    notes = []
    try:
        verdict = judge.verify_trajectory(gold.task, gold.files, trajectory, expected_answer=expected)
        passed = verdict.passed
        notes.append(f"The trajectory verifier judged the solution {verdict.verdict} "
                     f"({'; '.join(verdict.reasons) or 'no reasons given'}).")
    except ModelOutputError as e:
        passed = False
        notes.append(f"The trajectory verifier's reply was unreadable ({e}); counted as not verified.")
    if trajectory.status != "answered":
        reason = "ran out of steps" if trajectory.status == "fallback" else "made too many errors in a row"
        notes.append(f"The agent never called final_answer: it {reason} ({trajectory.n_errors} failed step(s)).")
    if not expected:
        return _scored(float(passed), " ".join(notes))
    answer = trajectory.answer or ""
    correct = ans_acc_gaia(answer, expected)
    notes.append(f"The final answer {_quote(answer)} {'matches' if correct else 'does not match'} the expected "
                 f"answer {_quote(expected)}.")
    return _scored((float(passed) + float(correct)) / 2, " ".join(notes))


# --- verifiers --------------------------------------------------------------------------------------------
def verifier_agreement(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                       pred_trace: Any = None) -> dspy.Prediction:
    """1 when the verifier's pass/fail agrees with the person's label (``gold.passed``), else 0."""
    failed = _failed(pred, "verification")
    if failed is not None:
        return failed
    said = bool(pred.result.passed)
    wanted = bool(gold.passed)
    label = getattr(gold, "label", None) or ("pass" if wanted else "reject")
    note = getattr(gold, "note", None)
    reasons = "; ".join(getattr(pred.result, "reasons", []) or []) or "none given"
    if said == wanted:
        return _scored(1.0, f"Right: you {'passed' if said else 'rejected'} it and the label says {label}.")
    feedback = (f"Wrong: you {'passed' if said else 'rejected'} it, but a person labelled it {label}"
                + (f" ({note})" if note else "") + f". Your reasons were: {reasons}.")
    return _scored(0.0, feedback)
