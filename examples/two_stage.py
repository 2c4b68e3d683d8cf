"""Compose your own program from mmat's stages and write what it made into the store.

Two stages: the teacher writes text-only questions (QueryGenerator), the controller answers each one as
a code agent in the sandbox (CodeAgent). Rows go through the store's one writer, like `mmat synth`'s.
"""
from pathlib import Path

import dspy

from mmat.ids import content_id
from mmat.lm import build_lm
from mmat.programs import CodeAgent, QueryGenerator, TrajectoryResult
from mmat.store import open_store
from mmat.store import run_lifecycle
from mmat.store.rows import RowBatch, trajectory_rows, write_batch
from mmat.store.runs import utcnow


class AskThenSolve(dspy.Module):
    def __init__(self, tools, settings):
        super().__init__()
        self.tools, self.settings = list(tools), settings
        self.ask, self.solve = QueryGenerator(2), CodeAgent(self.tools, settings=settings)

    def forward(self, domain: str, workspace: Path):
        with dspy.context(lm=build_lm(self.settings.teacher, settings=self.settings)):
            specs = self.ask(domain, self.tools, examples=[]).specs
        with dspy.context(lm=build_lm(self.settings.controller_model, settings=self.settings)):
            return [(s, self.solve(s.query, [], workspace / f"q{i}", tools=self.tools)) for i, s in enumerate(specs)]


def run(settings, domain: str = "home cooking", tools=("inspect_file_as_text",)) -> str:
    """Run the program once and store its tasks and trajectories; returns the run id."""
    results = AskThenSolve(tools, settings)(domain, settings.workspaces_dir / "two_stage")
    with open_store(settings) as store, run_lifecycle(store, "two_stage", settings, "examples/two_stage.py") as run:
        run_id = run.run_id
        rows = RowBatch(put_blob=lambda p: store.put_blob(p))
        for i, (spec, trajectory) in enumerate(results):
            task_id = content_id("task", run_id, i)
            rows.add("tasks", {"task_id": task_id, "run_id": run_id, "seed_idx": 0, "split": "train", "domain": domain,
                               "query": spec.query, "original_query": spec.query, "intended_tools": spec.intended_tools,
                               "status": "generated", "created_at": utcnow()})
            attempt = TrajectoryResult(attempt=0, controller=settings.controller_model, trajectory=trajectory)
            trajectory_rows(rows, run_id, task_id, attempt, settings.workspaces_dir, verifier=None)
        write_batch(store, rows)
        run.summary = dict(rows.counts)
    return run_id
