"""The two verifiers: QueryFileVerifier (is this task good data?) and TrajectoryVerifier (was it solved?).

Both see images as images when the verifier model takes them (litellm's ``supports_vision``, or
``multimodal=True``), otherwise as their captions; documents as markdown, cut to a budget. Both return
typed verdicts the runner stores as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from mmat.programs._calls import active_lm, call_predictor, clean_optional, lm_is_multimodal, mark, stage_signature
from mmat.programs.files import DOCUMENT_PREVIEW_CHARS, GeneratedFile, describe_files, image_files
from mmat.programs.trajectory import Trajectory, render_steps
from mmat.signatures.images import Images
from mmat.signatures.verify import MAX_REASONS, QueryFileVerdict, TrajectoryVerdict, VerifyQueryFiles, VerifyTrajectory

__all__ = ["QueryFileVerifier", "TrajectoryVerifier", "MAX_VERIFIER_IMAGES"]

MAX_VERIFIER_IMAGES = 4


def _reasons(value: Any) -> list[str]:
    items = value if isinstance(value, list) else ([value] if value else [])
    return [str(r).strip() for r in items if str(r).strip()][:MAX_REASONS]


class _Viewer(dspy.Module):
    """Shared by both verifiers: decide image mode and render the files."""

    def __init__(self, multimodal: bool | None, max_doc_chars: int):
        super().__init__()
        self.multimodal = multimodal
        self.max_doc_chars = max_doc_chars

    def _file_inputs(self, predictor: Any, files: Sequence[GeneratedFile]) -> dict[str, Any]:
        shown = self.multimodal if self.multimodal is not None else lm_is_multimodal(active_lm(predictor))
        images = image_files(files)[:MAX_VERIFIER_IMAGES] if shown else []
        inputs: dict[str, Any] = {"files": describe_files(files, images_shown=bool(images), limit=self.max_doc_chars)}
        if images:
            inputs["images"] = Images.of([(f.name, f.path) for f in images])
        return inputs


class QueryFileVerifier(_Viewer):
    """Query + files -> QueryFileVerdict (passed, reasons, optional rewritten query)."""

    _mmat_name = "query_file_verifier"

    def __init__(self, *, multimodal: bool | None = None, max_doc_chars: int = DOCUMENT_PREVIEW_CHARS,
                 signature: type[VerifyQueryFiles] | None = None):
        super().__init__(multimodal, max_doc_chars)
        self.verify = mark(dspy.Predict(stage_signature(signature, VerifyQueryFiles)), "query_file_verifier.verify")

    def forward(self, query: str, intended_tools: Sequence[str], files: Sequence[GeneratedFile], *,
                config: dict[str, Any] | None = None) -> QueryFileVerdict:
        pred = call_predictor(
            self.verify, "query-file verification", query=query, intended_tools=list(intended_tools),
            config=config or {}, **self._file_inputs(self.verify, files),
        )
        passed = bool(pred.passed)
        return QueryFileVerdict(
            passed=passed, reasons=_reasons(pred.reasons),
            rewritten_query=clean_optional(pred.rewritten_query) if passed else None,
        )


class TrajectoryVerifier(_Viewer):
    """Query + files + every step + answer -> TrajectoryVerdict (passed = verdict is 'correct')."""

    _mmat_name = "trajectory_verifier"

    def __init__(self, *, multimodal: bool | None = None, max_doc_chars: int = DOCUMENT_PREVIEW_CHARS,
                 signature: type[VerifyTrajectory] | None = None):
        super().__init__(multimodal, max_doc_chars)
        self.verify = mark(dspy.Predict(stage_signature(signature, VerifyTrajectory)), "trajectory_verifier.verify")

    def forward(self, query: str, files: Sequence[GeneratedFile], trajectory: Trajectory, *,
                expected_answer: str | None = None, config: dict[str, Any] | None = None) -> TrajectoryVerdict:
        inputs = self._file_inputs(self.verify, files)
        if expected_answer:
            inputs["expected_answer"] = expected_answer
        pred = call_predictor(
            self.verify, "trajectory verification", query=query, steps=render_steps(trajectory.steps),
            answer=trajectory.answer if trajectory.answer is not None else "(no answer)", config=config or {}, **inputs,
        )
        verdict = pred.verdict if pred.verdict in ("correct", "incorrect") else "incorrect"
        score = min(1.0, max(0.0, float(pred.score))) if pred.score is not None else 0.0
        return TrajectoryVerdict(passed=verdict == "correct", verdict=verdict, reasons=_reasons(pred.reasons), score=score)
