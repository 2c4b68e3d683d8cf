"""Synthesis: one seed -> tasks -> files -> verified tasks -> k trajectories -> verdicts.

It composes the five stage modules and returns everything they produced in one typed ``SeedResult``,
rejections included (a rejected task is data too). Verification is two-stage: the rule checks
(``mmat.programs.rules``) run first and a subject that fails them is rejected without asking the
verifier model; a trajectory is correct only when the rules pass *and* the LM verifier passes. It
never touches the store: the runner turns the result into rows. Each role runs with its own model and the adapter that model needs
(``mmat.lm.adapter_for``): the teacher writes tasks and files, the controller drives the agent, the
verifier judges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict

from mmat.config import Settings, load_settings
from mmat.errors import ModelOutputError
from mmat.pool import ImagePool
from mmat.programs.agent import CodeAgent
from mmat.programs.file_generator import FileGenerator, FileGenResult
from mmat.programs.query_generator import QueryGenerator, QueryGenResult, SpecRejection
from mmat.programs.rules import (
    ExpectedAnswerCheck,
    RuleOptions,
    RuleVerdict,
    TaskSubject,
    TrajectorySubject,
    check_task,
    check_trajectory,
    compare_expected,
)
from mmat.programs.seeds import Seed
from mmat.programs.trajectory import Trajectory
from mmat.programs.verifiers import QueryFileVerifier, TrajectoryVerifier
from mmat.signatures.queries import QuerySpec
from mmat.store.context import attributed
from mmat.signatures.verify import QueryFileVerdict, TrajectoryVerdict

__all__ = ["Synthesis", "SeedResult", "TaskResult", "TrajectoryResult", "TaskStatus"]

TaskStatus = Literal["rejected", "failed", "verified", "solved"]
Dedup = Callable[[list[str]], list[bool]]


class TrajectoryResult(BaseModel):
    """One agent attempt at a task: the trajectory, the rule checks, the expected-answer comparison and the LM
    verifier's verdict."""

    model_config = ConfigDict(extra="forbid")

    attempt: int
    controller: str
    trajectory: Trajectory
    rules: RuleVerdict | None = None
    expected: ExpectedAnswerCheck | None = None
    verdict: TrajectoryVerdict | None = None
    verdict_error: str | None = None

    @property
    def rejected_by_rules(self) -> bool:
        return self.rules is not None and not self.rules.passed

    @property
    def correct(self) -> bool:
        """The rules passed and the LM verifier said correct."""
        return not self.rejected_by_rules and self.verdict is not None and self.verdict.passed

    @property
    def verdict_label(self) -> str | None:
        """trajectories.verdict: correct | incorrect | None (the verifier's reply was unreadable: not verified)."""
        if self.correct:
            return "correct"
        return "incorrect" if self.rejected_by_rules or self.verdict is not None else None


class TaskResult(BaseModel):
    """One generated task and everything that happened to it.

    status: rejected (bad files, a rule check failed, or the query-file verifier said no), verified (passed; not solved yet:
    ``solve=False``), solved (some trajectory verified correct), failed (no trajectory verified correct,
    or a verifier's reply was unreadable).
    """

    model_config = ConfigDict(extra="forbid")

    spec_index: int
    spec: QuerySpec
    query: str
    workspace: Path
    files: FileGenResult
    rules: RuleVerdict | None = None
    query_verdict: QueryFileVerdict | None = None
    trajectories: list[TrajectoryResult] = []
    status: TaskStatus
    status_reason: str | None = None


class SeedResult(BaseModel):
    """Everything one seed produced: its specs, the duplicates dropped, each task with its files, verdicts and
    trajectories; ``error`` when the first stage failed."""

    model_config = ConfigDict(extra="forbid")

    seed: Seed
    queries: QueryGenResult | None = None
    duplicates: list[SpecRejection] = []
    tasks: list[TaskResult] = []
    error: str | None = None


class Synthesis(dspy.Module):
    """Compose QueryGenerator, FileGenerator, QueryFileVerifier, CodeAgent and TrajectoryVerifier for one seed.

    Every stage can be passed in (``query_generator=QueryGenerator(signature=MySignature)``, your own
    ``dspy.Module`` with the same call, ...); the defaults are built from ``settings``. ``pool`` is None
    only for a program that verifies and never makes files (``mmat verify``).

    Models are bound to **roles**: ``teacher`` (queries, files), ``controller`` (the agent) and
    ``verifier`` (both verifiers). A role's LM is ``lms[role]`` when given (a ``dspy.LM``), else built from
    the settings' model string for it. Each stage runs inside ``dspy.context(lm=<its role's LM>)``, so an
    outer ``dspy.context(lm=...)`` is overridden on purpose: a synthesis always has three roles, and one
    ambient LM would silently make the teacher grade itself. To use one LM everywhere, pass it for all three.
    """

    _mmat_name = "synthesis"

    ROLES = ("teacher", "controller", "verifier")

    def __init__(
        self,
        pool: ImagePool | None,
        *,
        settings: Settings | None = None,
        tools: Sequence[str] | None = None,
        n_queries: int = 3,
        trajectories_per_task: int | None = None,
        dedup: Dedup | None = None,
        solve: bool = True,
        limits: Any = None,
        query_generator: Any = None,
        file_generator: Any = None,
        query_verifier: Any = None,
        agent: Any = None,
        trajectory_verifier: Any = None,
        lms: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.settings = settings or load_settings()
        self.k = trajectories_per_task if trajectories_per_task is not None else self.settings.trajectories_per_task
        if self.k < 1:
            raise ValueError(f"trajectories_per_task must be >= 1, got {self.k}")
        unknown = sorted(set(lms or {}) - set(self.ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)} in lms: the roles are {', '.join(self.ROLES)}")
        self.tools = list(tools) if tools is not None else None
        self.dedup = dedup
        self.solve = solve
        self.query_generator = query_generator or QueryGenerator(n_queries)
        self.file_generator = file_generator or FileGenerator(
            pool, max_retries=self.settings.file_retries, limits=limits, settings=self.settings)
        self.query_verifier = query_verifier or QueryFileVerifier()
        self.agent = agent or CodeAgent(self.tools or [], settings=self.settings, limits=limits)
        self.trajectory_verifier = trajectory_verifier or TrajectoryVerifier()
        self.rule_options = RuleOptions.from_settings(self.settings)
        self._lms: dict[str, Any] = dict(lms or {})

    # --- roles ---------------------------------------------------------------------------------
    def role_model(self, role: str) -> str:
        """The model string a role runs on (an injected LM's ``model``, else the settings')."""
        if role in self._lms:
            return str(self._lms[role].model)
        return {"teacher": self.settings.teacher, "controller": self.settings.controller_model,
                "verifier": self.settings.verifier_model}[role]

    @contextmanager
    def _role(self, role: str) -> Iterator[None]:
        from mmat.lm import adapter_for, build_lm

        if role not in self._lms:
            self._lms[role] = build_lm(self.role_model(role), settings=self.settings)
        lm = self._lms[role]
        with dspy.context(lm=lm, adapter=adapter_for(str(lm.model))):
            yield

    def _sample_config(self, attempt: int) -> dict[str, Any]:
        return {"rollout_id": attempt, "temperature": self.settings.temperature}

    # --- the composition -----------------------------------------------------------------------
    def forward(self, seed: Seed, workspace: Path) -> SeedResult:
        with attributed(seed_idx=seed.index):  # the recorder names each LM call's seed, task, trajectory
            return self._forward(seed, workspace)

    def _forward(self, seed: Seed, workspace: Path) -> SeedResult:
        workspace = Path(workspace)
        tools = self.tools or seed.tools
        result, specs = self.plan(seed)
        for index, spec in specs:
            result.tasks.append(self.make_task(index, spec, tools, workspace / f"task_{index}"))
        return result

    # --- the units a scheduler runs separately (mmat.pipeline.scheduler); forward() runs them in order ---
    def plan(self, seed: Seed) -> tuple[SeedResult, list[tuple[int, QuerySpec]]]:
        """Query generation and dedup: the seed's result so far and the (spec index, spec) pairs to make.
        An unreadable reply of this first stage is ``result.error`` (and no specs)."""
        result = SeedResult(seed=seed)
        try:
            with self._role("teacher"):
                result.queries = self.query_generator(seed.domain.render(), self.tools or seed.tools, seed.examples)
        except ModelOutputError as e:
            result.error = str(e)
            return result, []
        return result, self._drop_duplicates(result.queries.specs, result)

    def _drop_duplicates(self, specs: list[QuerySpec], result: SeedResult) -> list[tuple[int, QuerySpec]]:
        indexed = list(enumerate(specs))
        if self.dedup is None or not specs:
            return indexed
        flags = self.dedup([s.query for s in specs])
        for (_, spec), dup in zip(indexed, flags, strict=True):
            if dup:
                result.duplicates.append(SpecRejection(query=spec.query, reason="near-duplicate of an earlier query"))
        return [pair for pair, dup in zip(indexed, flags, strict=True) if not dup]

    def make_task(self, index: int, spec: QuerySpec, tools: Sequence[str], workspace: Path) -> TaskResult:
        """Files, query-file verification and (with ``solve``) k verified trajectories for one spec."""
        with attributed(task_key=index):
            return self._make_task(index, spec, tools, workspace)

    def _make_task(self, index: int, spec: QuerySpec, tools: Sequence[str], workspace: Path) -> TaskResult:
        task = self.prepare_task(index, spec, tools, workspace)
        if self.needs_solving(task):
            self._solve(task, tools, workspace)
        return task

    def prepare_task(self, index: int, spec: QuerySpec, tools: Sequence[str], workspace: Path) -> TaskResult:
        """Files and query-file verification for one spec (no trajectories yet)."""
        with attributed(task_key=index):
            with self._role("teacher"):
                files = self.file_generator(spec, workspace / "files")
            task = TaskResult(spec_index=index, spec=spec, query=spec.query, workspace=workspace, files=files,
                              status="rejected")
            if not files.ok:
                task.status_reason = "files: " + "; ".join(f"{f.file_name}: {f.reason}" for f in files.failures)
                return task
            return self.verify_task(task, tools)

    def needs_solving(self, task: TaskResult) -> bool:
        """Whether ``task`` gets trajectories (``self.k`` attempts of :meth:`attempt`, then :meth:`settle`)."""
        return task.status == "verified" and self.solve

    def _task_rules(self, task: TaskResult, query: str, tools: Sequence[str]) -> RuleVerdict:
        from mmat.tools import final_tool_names

        return check_task(TaskSubject(query=query, intended_tools=task.spec.intended_tools, files=task.files.files,
                                      available_tools=[*tools, *final_tool_names()]), self.rule_options)

    def verify_task(self, task: TaskResult, tools: Sequence[str], *, use_lm: bool = True) -> TaskResult:
        """Rule checks, then (if they pass and ``use_lm``) the query-file verifier; sets the task's status and query.

        A rewritten query is taken only if it passes the same rules (a weak verifier's rewrite can be junk);
        otherwise the agent gets the original query."""
        spec = task.spec
        task.rules = self._task_rules(task, spec.query, tools)
        if not task.rules.passed:
            task.status, task.status_reason = "rejected", "rules: " + "; ".join(task.rules.reasons)
            return task
        if not use_lm:
            return task
        try:
            with self._role("verifier"):
                verdict = self.query_verifier(spec.query, spec.intended_tools, task.files.files)
        except ModelOutputError as e:
            task.status, task.status_reason = "failed", f"query-file verifier: {e}"
            return task
        task.query_verdict = verdict
        if not verdict.passed:
            task.status, task.status_reason = "rejected", "query-file verifier: " + ("; ".join(verdict.reasons) or "rejected")
            return task
        rewrite = verdict.rewritten_query
        task.query = rewrite if rewrite and self._task_rules(task, rewrite, tools).passed else spec.query
        task.status = "verified"
        return task

    def _solve(self, task: TaskResult, tools: Sequence[str], workspace: Path) -> None:
        task.trajectories = [self.attempt(task, attempt, tools, workspace) for attempt in range(self.k)]
        self.settle(task)

    def attempt(self, task: TaskResult, attempt: int, tools: Sequence[str], workspace: Path) -> TrajectoryResult:
        """One agent attempt at a verified task and its verification (attributed to the task and attempt)."""
        controller = self.role_model("controller")
        with attributed(task_key=task.spec_index, attempt=attempt, controller=controller):
            with self._role("controller"):
                trajectory = self.agent(task.query, task.files.files, workspace / f"traj_{attempt}", tools=tools,
                                        config=self._sample_config(attempt))
            run = TrajectoryResult(attempt=attempt, controller=controller, trajectory=trajectory)
            return self.verify_trajectory(task, run, workspace / f"traj_{attempt}")

    def settle(self, task: TaskResult) -> None:
        """The task's status from its trajectories (in attempt order): solved if any is verified correct."""
        task.trajectories.sort(key=lambda t: t.attempt)
        if any(t.correct for t in task.trajectories):
            task.status, task.status_reason = "solved", None
        else:
            task.status = "failed"
            by_rules = sum(t.rejected_by_rules for t in task.trajectories)
            task.status_reason = f"none of {self.k} trajectories was verified correct" + (
                f" ({by_rules} rejected by the rules)" if by_rules else "")

    def verify_trajectory(self, task: TaskResult, run: TrajectoryResult, workspace: Path | None = None, *,
                          use_lm: bool = True) -> TrajectoryResult:
        """Rule checks and the expected-answer comparison, then (if the rules pass) the trajectory verifier.

        A trajectory the rules reject never reaches the verifier model: no model can talk it back into
        'correct', and no tokens are spent on it."""
        spec, trajectory = task.spec, run.trajectory
        run.rules = check_trajectory(TrajectorySubject(
            query=task.query, trajectory=trajectory, intended_tools=spec.intended_tools,
            answer_type=spec.expected_answer_type, expected_answer=spec.expected_answer, files=task.files.files,
            workspace=workspace), self.rule_options)
        if spec.expected_answer:
            run.expected = compare_expected(trajectory.answer, spec.expected_answer)
        if not run.rules.passed or not use_lm:
            return run
        try:
            with self._role("verifier"):
                run.verdict = self.trajectory_verifier(task.query, task.files.files, trajectory,
                                                       expected_answer=spec.expected_answer)
        except ModelOutputError as e:
            run.verdict_error = str(e)
        return run
