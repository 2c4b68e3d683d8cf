"""The verifiers as judges inside metrics: mmat's own verdicts, run with the verifier model.

A metric that needs a verdict (is this spec good data? was this trajectory right?) asks a ``Judge``.
The judge runs mmat's verifier modules under the verifier model and its adapter, with DSPy's trace
switched off, so the judge's calls never become demos of the program being optimized. The judge's
verifiers are fresh, uncompiled modules: the yardstick does not move while the program does. As in
synthesis, the rule checks (``mmat.programs.rules``) judge a trajectory first: one they reject scores
as incorrect without asking the model, so no optimizer is rewarded for a fallback or degenerate answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from mmat.config import Settings
from mmat.programs._calls import call_predictor, clean_optional
from mmat.programs.files import GeneratedFile, file_name_for, mime_for
from mmat.programs.rules import RuleOptions, TrajectorySubject, check_trajectory
from mmat.programs.trajectory import Trajectory
from mmat.programs.verifiers import QueryFileVerifier, TrajectoryVerifier
from mmat.signatures.queries import QuerySpec
from mmat.signatures.verify import MAX_REASONS, QueryFileVerdict, TrajectoryVerdict

__all__ = ["Judge", "planned_files"]


def _reasons(value: Any) -> list[str]:
    items = value if isinstance(value, list) else ([value] if value else [])
    return [str(r).strip() for r in items if str(r).strip()][:MAX_REASONS]


def planned_files(spec: QuerySpec) -> str:
    """A spec's files as the verifier reads them before they exist: name, kind and the planned content."""
    if not spec.file_needs:
        return "(no files)"
    taken: set[str] = set()
    blocks = []
    for i, need in enumerate(spec.file_needs, 1):
        name = file_name_for(need, taken)
        label = "Image description" if need.modality == "image" else "Planned content"
        blocks.append(f"{i}. {name} ({need.modality}, {mime_for(name)})\n{label}: {need.content}")
    return "\n\n".join(blocks)


class Judge:
    """Runs the query-file and trajectory verifiers with ``settings.verifier_model`` (or ``lm``)."""

    def __init__(self, settings: Settings, *, lm: Any = None, adapter: Any = None):
        from mmat.lm import adapter_for, build_lm

        self.model = settings.verifier_model
        self.lm = lm if lm is not None else build_lm(self.model, settings=settings)
        self.adapter = adapter if adapter is not None else adapter_for(self.model)
        self.query_verifier = QueryFileVerifier()
        self.trajectory_verifier = TrajectoryVerifier()
        self.rule_options = RuleOptions.from_settings(settings)

    def _context(self):
        return dspy.context(lm=self.lm, adapter=self.adapter, trace=None)

    def verify_spec(self, spec: QuerySpec) -> QueryFileVerdict:
        """The query-file verifier on a spec whose files are not made yet (it reads their planned content).

        Raises ModelOutputError when the verifier's reply is unreadable.
        """
        with self._context():
            pred = call_predictor(
                self.query_verifier.verify, "query-file verification", query=spec.query,
                intended_tools=list(spec.intended_tools), files=planned_files(spec),
            )
        passed = bool(pred.passed)
        return QueryFileVerdict(passed=passed, reasons=_reasons(pred.reasons),
                                rewritten_query=clean_optional(pred.rewritten_query) if passed else None)

    def verify_trajectory(self, query: str, files: Sequence[GeneratedFile], trajectory: Trajectory, *,
                          expected_answer: str | None = None) -> TrajectoryVerdict:
        """The rule checks, then the trajectory verifier, as synthesis runs them. The expected answer goes to the
        verifier only: metrics score answer correctness themselves. Raises ModelOutputError on an unreadable reply."""
        rules = check_trajectory(TrajectorySubject(query=query, trajectory=trajectory, files=files), self.rule_options)
        if not rules.passed:
            return TrajectoryVerdict(passed=False, verdict="incorrect", reasons=rules.reasons[:MAX_REASONS], score=0.0)
        with self._context():
            return self.trajectory_verifier(query, files, trajectory, expected_answer=expected_answer)
