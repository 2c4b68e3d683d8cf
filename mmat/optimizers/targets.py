"""Optimization targets: one mmat program each, called the way DSPy's optimizers call programs.

DSPy's optimizers run ``program(**example.inputs())`` and hand the result to the metric. mmat's
programs need a little more than their example inputs (a fresh workspace per call for the file
generator and the agent) and report a model's unreadable answer as ``ModelOutputError``. A target
wraps the program as ``self.program``, supplies the workspace, and turns the outcome into a
``dspy.Prediction(result=..., error=...)``: an unreadable answer is the model's failure, so it is
scored (0, with the error as feedback) instead of aborting the optimization.

Only ``target.program`` is saved: its predictors are named as in the bare module, so the compiled
file loads into the module or into the same stage of ``Synthesis``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from mmat.errors import ModelOutputError
from mmat.programs.files import GeneratedFile
from mmat.programs.trajectory import Trajectory
from mmat.signatures.queries import QuerySpec, SeedExample

__all__ = [
    "Target",
    "QueryGeneratorTarget",
    "FileGeneratorTarget",
    "AgentTarget",
    "QueryFileVerifierTarget",
    "TrajectoryVerifierTarget",
]


class Target(dspy.Module):
    """Base: holds ``program`` and turns its result or its ModelOutputError into a Prediction."""

    def __init__(self, program: dspy.Module, workspace_root: Path | None = None):
        super().__init__()
        self.program = program
        self.workspace_root = Path(workspace_root) if workspace_root is not None else None

    def _workspace(self) -> Path:
        if self.workspace_root is None:
            raise ValueError(f"{type(self).__name__} needs a workspace_root for the files its program writes")
        self.workspace_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="call_", dir=self.workspace_root))

    @staticmethod
    def _outcome(call: Any) -> dspy.Prediction:
        try:
            return dspy.Prediction(result=call(), error=None)
        except ModelOutputError as e:
            return dspy.Prediction(result=None, error=str(e))


class QueryGeneratorTarget(Target):
    def forward(self, domain: str, tools: Sequence[str], examples: Sequence[SeedExample]) -> dspy.Prediction:
        return self._outcome(lambda: self.program(domain, list(tools), list(examples)))


class FileGeneratorTarget(Target):
    def forward(self, spec: QuerySpec) -> dspy.Prediction:
        workspace = self._workspace()
        return self._outcome(lambda: self.program(spec, workspace / "files"))


class AgentTarget(Target):
    def forward(self, task: str, files: Sequence[GeneratedFile], tools: Sequence[str]) -> dspy.Prediction:
        workspace = self._workspace()
        return self._outcome(lambda: self.program(task, list(files), workspace, tools=list(tools)))


class QueryFileVerifierTarget(Target):
    def forward(self, query: str, intended_tools: Sequence[str], files: Sequence[GeneratedFile]) -> dspy.Prediction:
        return self._outcome(lambda: self.program(query, list(intended_tools), list(files)))


class TrajectoryVerifierTarget(Target):
    def forward(self, query: str, files: Sequence[GeneratedFile], trajectory: Trajectory,
                expected_answer: str | None = None) -> dspy.Prediction:
        return self._outcome(lambda: self.program(query, list(files), trajectory, expected_answer=expected_answer))
