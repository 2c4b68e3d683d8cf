"""Fixtures for the optimizer tests: dummy-model settings and a small store written row by row.

The store holds what a synth run leaves behind (tasks with CSV files as blobs, trajectories with
steps, verifier verdicts) for the scripted world of ``mmat.testing.scripted``, written directly so a
test does not pay for a whole synthesis run. ``run_optimize`` opens the store itself, so tests fill it
inside ``with open_store(settings) as store: world = World(store)`` and close it before optimizing.
"""

from __future__ import annotations

from typing import Any

import pytest

from mmat.config import Settings, load_settings
from mmat.ids import content_id
from mmat.store.runs import utcnow
from mmat.testing import scripted
from mmat.testing.fixtures import mmat_home, offline_env  # noqa: F401  (fixtures)

DOMAIN = "finance"
TOOLS = ["inspect_file_as_text", "visualizer"]


@pytest.fixture
def settings(mmat_home) -> Settings:  # noqa: F811
    s = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                      concurrency=1, step_timeout_s=20, dedup_threshold=0.95)
    s.ensure_dirs()
    return s


@pytest.fixture
def scripted_models():
    return scripted.register()


class World:
    """Writes tasks, files, trajectories, steps and verdicts the way the synth runner does."""

    def __init__(self, store: Any):
        self.store = store

    def task(self, key: str, *, rent: int = 950, status: str = "solved", vague: bool = False,
             expected: str | None = "auto", domain: str = DOMAIN) -> str:
        task_id = content_id("task", "test", key)
        query = (f"{scripted.VAGUE} ({key})?" if vague
                 else f"In the {key} budget file, how much was spent on rent in March?")
        need = {"modality": "table", "content": f"{key} March expenses: rent {rent}, food 412.5",
                "name_hint": "march", "format": "csv"}
        self.store.writer.put("tasks", [{
            "task_id": task_id, "run_id": "test", "seed_idx": 0, "split": "train", "domain": domain, "query": query,
            "original_query": query, "intended_tools": ["inspect_file_as_text"], "file_needs": [need],
            "answer_type": "number", "expected_answer": str(rent) if expected == "auto" else expected,
            "status": status, "status_reason": None, "created_at": utcnow(),
        }])
        rel, sha = self.store.put_blob(f"category,amount\nrent,{rent}\nfood,412.5\n".encode(), ".csv")
        self.store.writer.put("files", [{
            "file_id": content_id(task_id, "file", 0), "task_id": task_id, "name": "march.csv", "path": rel,
            "sha256": sha, "modality": "table", "mime": "text/csv", "bytes": 40, "source": "generated",
            "caption": need["content"], "created_at": utcnow(),
        }])
        self.verdict("task", task_id, "query_file", passed=not vague, verdict="pass" if not vague else "reject",
                     reasons=["too vague to check"] if vague else ["the files hold what the query needs"])
        self.store.writer.flush()
        return task_id

    def trajectory(self, task_id: str, answer: str, *, attempt: int = 0) -> str:
        traj_id = content_id("traj", task_id, attempt, "dummy/agent")
        right = answer.strip().isdigit()
        self.store.writer.put("trajectories", [{
            "traj_id": traj_id, "task_id": task_id, "run_id": "test", "attempt": attempt, "controller": "dummy/agent",
            "answer": answer, "status": "answered", "verdict": "correct" if right else "incorrect", "n_steps": 2,
            "n_errors": 0, "created_at": utcnow(),
        }])
        self.store.writer.put("steps", [
            {"traj_id": traj_id, "idx": 0, "thought": "Read the table.", "code": "print(inspect_file_as_text('march.csv'))",
             "observation": "Tool calls:\ninspect_file_as_text(file_path='march.csv') returned:\n| rent | 950 |",
             "error": None, "images": [], "duration_ms": 5.0,
             "tool_calls": [{"name": "inspect_file_as_text", "arguments": {"file_path": "march.csv"},
                             "result": "| rent | 950 |", "duration_ms": 1.0, "error": None}]},
            {"traj_id": traj_id, "idx": 1, "thought": "Answer.", "code": f"final_answer({answer!r})",
             "observation": f"Final answer given: {answer}", "error": None, "images": [], "duration_ms": 1.0,
             "tool_calls": []},
        ])
        self.verdict("trajectory", traj_id, "trajectory", passed=right, verdict="correct" if right else "incorrect",
                     reasons=["answer read from the table"] if right else ["no numeric answer"], score=0.9 if right else 0.1)
        self.store.writer.flush()
        return traj_id

    def verdict(self, kind: str, subject_id: str, verifier: str, *, passed: bool, verdict: str,
                reasons: list[str], score: float | None = None) -> None:
        self.store.writer.put("verdicts", [{
            "verdict_id": content_id("verdict", verifier, kind, subject_id), "subject_kind": kind,
            "subject_id": subject_id, "verifier": verifier, "model": "dummy/verifier", "passed": passed,
            "verdict": verdict, "score": score, "reasons": reasons, "rewritten_query": None, "created_at": utcnow(),
        }])

    def label(self, kind: str, subject_id: str, label: str, note: str | None = None) -> None:
        passed = label in ("pass", "correct")
        self.verdict(kind, subject_id, "label", passed=passed, verdict=label, reasons=[note] if note else [],
                     score=float(passed))
        self.store.writer.flush()
