"""The programs ``mmat optimize`` can compile: how to build each, which model runs it, how it is scored.

Each program runs with the model of its role in synthesis (the teacher writes tasks and files, the
controller drives the agent, the verifier judges), so compiled demos and instructions are tuned for
the model that will use them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.optimizers import metrics
from mmat.optimizers.targets import (
    AgentTarget,
    FileGeneratorTarget,
    QueryFileVerifierTarget,
    QueryGeneratorTarget,
    Target,
    TrajectoryVerifierTarget,
)

__all__ = ["ProgramEntry", "PROGRAMS", "PROGRAM_NAMES", "get_program", "role_model"]

Role = Literal["teacher", "controller", "verifier"]


class ProgramEntry(BaseModel):
    """One optimizable program."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    role: Role
    build: Callable[[Settings, Any], Any]  # (settings, store) -> the bare dspy.Module
    target: type[Target]
    metric: Callable[..., Any]  # the metric function (five-argument protocol plus keyword judgments)
    needs_judge: bool = False
    bootstrap_threshold: float = 1.0  # score a bootstrapped trace needs to become a demo

    def metric_for(self, settings: Settings, judge: Any = None) -> Callable[..., Any]:
        """The metric with its judgments bound (the five-argument form every optimizer takes)."""
        if not self.needs_judge:
            return self.metric
        if judge is None:
            raise ValueError(f"the {self.name} metric needs a Judge")
        extra: dict[str, Any] = {"judge": judge}
        if self.metric is metrics.query_generator_metric:
            extra["dedup_threshold"] = settings.dedup_threshold
        return functools.partial(self.metric, **extra)  # no update_wrapper: inspect must see the bound signature


def _query_generator(settings: Settings, store: Any) -> Any:
    from mmat.programs.query_generator import QueryGenerator

    return QueryGenerator()


def _file_generator(settings: Settings, store: Any) -> Any:
    from mmat.store.pool_images import load_pool
    from mmat.programs.file_generator import FileGenerator

    return FileGenerator(load_pool(store), max_retries=settings.file_retries, settings=settings)


def _agent(settings: Settings, store: Any) -> Any:
    from mmat.programs.agent import CodeAgent

    return CodeAgent([], settings=settings)


def _query_file_verifier(settings: Settings, store: Any) -> Any:
    from mmat.programs.verifiers import QueryFileVerifier

    return QueryFileVerifier()


def _trajectory_verifier(settings: Settings, store: Any) -> Any:
    from mmat.programs.verifiers import TrajectoryVerifier

    return TrajectoryVerifier()


PROGRAMS: dict[str, ProgramEntry] = {
    "query_generator": ProgramEntry(
        name="query_generator", role="teacher", build=_query_generator, target=QueryGeneratorTarget,
        metric=metrics.query_generator_metric, needs_judge=True, bootstrap_threshold=0.5,
    ),
    "file_generator": ProgramEntry(
        name="file_generator", role="teacher", build=_file_generator, target=FileGeneratorTarget,
        metric=metrics.file_generator_metric,
    ),
    "agent": ProgramEntry(
        name="agent", role="controller", build=_agent, target=AgentTarget, metric=metrics.agent_metric,
        needs_judge=True,
    ),
    "query_file_verifier": ProgramEntry(
        name="query_file_verifier", role="verifier", build=_query_file_verifier, target=QueryFileVerifierTarget,
        metric=metrics.verifier_agreement,
    ),
    "trajectory_verifier": ProgramEntry(
        name="trajectory_verifier", role="verifier", build=_trajectory_verifier, target=TrajectoryVerifierTarget,
        metric=metrics.verifier_agreement,
    ),
}
PROGRAM_NAMES = tuple(PROGRAMS)


def get_program(name: str) -> ProgramEntry:
    if name not in PROGRAMS:
        raise ConfigError(f"unknown program {name!r}: choose from {', '.join(PROGRAM_NAMES)}")
    return PROGRAMS[name]


def role_model(settings: Settings, role: Role) -> str:
    """The model string that runs a role: teacher, controller (defaults to teacher), verifier (defaults to teacher)."""
    return {"teacher": settings.teacher, "controller": settings.controller_model, "verifier": settings.verifier_model}[role]
