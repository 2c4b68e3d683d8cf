"""A small store of finished trajectories, written row by row, for export/import and selection tests.

Why not ``mmat synth``: exports need cases synthesis makes only by chance — a task with two images,
an image produced by a step, a text-only task, verdicts overruled by human labels, a preference pair —
and they need them in well under a second. Rows go through the store's own writer and blob store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.ids import content_id
from mmat.store.runs import utcnow

__all__ = ["ExportStore", "build_export_store"]

RUN_ID = "run-fixture"


@dataclass
class ExportStore:
    """IDs of what ``build_export_store`` wrote, by role."""

    multimodal: str  # verified correct; two task images and one image produced by step 1
    text: str  # verified correct, text only
    overruled: str  # verified correct, labelled incorrect by a person: never selected by default
    rescued: str  # verified incorrect, labelled correct by a person: selected by default
    unverified: str  # no verdict, no label
    pair_ids: list[str] = field(default_factory=list)

    @property
    def selected(self) -> set[str]:
        return {self.multimodal, self.text, self.rescued}


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


def _files(store: Any, task_id: str, specs: list[tuple[Path, str, str]]) -> list[dict[str, Any]]:
    rows = []
    for i, (path, modality, mime) in enumerate(specs):
        rel, sha = store.put_blob(path, path.suffix)
        rows.append({"file_id": content_id(task_id, "file", i), "task_id": task_id, "position": i, "name": path.name,
                     "path": rel, "sha256": sha, "modality": modality, "mime": mime, "bytes": path.stat().st_size,
                     "source": "pool" if modality == "image" else "generated", "caption": None, "created_at": utcnow()})
    return rows


def _step(traj_id: str, idx: int, thought: str, code: str, observation: str, *, images: list[str] = (),
          calls: list[tuple[str, dict[str, Any], str]] = ()) -> dict[str, Any]:
    return {"traj_id": traj_id, "idx": idx, "thought": thought, "code": code, "observation": observation, "error": None,
            "images": list(images), "duration_ms": 5.0,
            "tool_calls": [{"name": n, "arguments": a, "result": r, "duration_ms": 1.0, "error": None} for n, a, r in calls]}


def _trajectory(traj_id: str, task_id: str, verdict: str | None, tools: list[str], multimodal: bool, answer: str,
                n_steps: int, attempt: int = 0) -> dict[str, Any]:
    return {"traj_id": traj_id, "task_id": task_id, "run_id": RUN_ID, "attempt": attempt, "controller": "dummy/agent",
            "answer": answer, "status": "answered", "verdict": verdict, "n_steps": n_steps, "n_errors": 0,
            "tools": tools, "multimodal": multimodal, "origin": "synth", "created_at": utcnow()}


def _verdict(subject_id: str, verifier: str, passed: bool, verdict: str) -> dict[str, Any]:
    return {"verdict_id": content_id("verdict", verifier, subject_id), "subject_kind": "trajectory",
            "subject_id": subject_id, "verifier": verifier, "model": None if verifier == "label" else "dummy/verifier",
            "passed": passed, "verdict": verdict, "score": 1.0 if passed else 0.0, "reasons": ["fixture"],
            "rewritten_query": None, "created_at": utcnow()}


def build_export_store(store: Any, scratch: Path) -> ExportStore:
    """Write the fixture rows into ``store`` (images are made under ``scratch``); returns their IDs."""
    scratch.mkdir(parents=True, exist_ok=True)
    red = _image(scratch / "red.png", (40, 30), (220, 30, 30))
    blue = _image(scratch / "blue.png", (20, 50), (30, 70, 220))
    crop = _image(scratch / "crop.png", (16, 16), (30, 200, 60))
    table = scratch / "march.csv"
    table.write_text("category,amount\nrent,956\nfood,412.5\n")
    now = utcnow()
    w = store.writer
    w.put("runs", [{"run_id": RUN_ID, "kind": "synth", "command": "mmat synth --tasks 2", "status": "done",
                    "settings": {"teacher": "dummy/teacher", "controller": "dummy/agent", "verifier": "dummy/verifier"},
                    "summary": {}, "mmat_version": "test", "started_at": now, "finished_at": now}])
    tasks = []
    task_mm, task_text = content_id("task", RUN_ID, 0, 0), content_id("task", RUN_ID, 1, 0)
    for task_id, query, domain in ((task_mm, "Which of the two photos is red, and what colour is the crop?", "photos"),
                                   (task_text, "How much was spent on rent in March?", "budget")):
        tasks.append({"task_id": task_id, "run_id": RUN_ID, "seed_idx": 0, "split": "train", "domain": domain,
                      "query": query, "original_query": query, "intended_tools": ["visualizer"], "file_needs": [],
                      "answer_type": "text", "expected_answer": None, "status": "solved", "status_reason": None,
                      "created_at": now})
    w.put("tasks", tasks)
    w.put("files", _files(store, task_mm, [(red, "image", "image/png"), (blue, "image", "image/png"),
                                           (table, "table", "text/csv")])
          + _files(store, task_text, [(table, "table", "text/csv")]))
    crop_rel, _ = store.put_blob(crop, ".png")
    ids = ExportStore(*(content_id("traj", t, a, "dummy/agent") for t, a in
                        ((task_mm, 0), (task_text, 0), (task_text, 1), (task_text, 2), (task_text, 3))))
    trajs = [
        _trajectory(ids.multimodal, task_mm, "correct", ["visualizer", "image_edit"], True, "the first; green", 3),
        _trajectory(ids.text, task_text, "correct", ["inspect_file_as_text"], False, "956", 2),
        _trajectory(ids.overruled, task_text, "correct", ["inspect_file_as_text"], False, "412.5", 2, attempt=1),
        _trajectory(ids.rescued, task_text, "incorrect", ["inspect_file_as_text"], False, "956.0", 2, attempt=2),
        _trajectory(ids.unverified, task_text, None, ["inspect_file_as_text"], False, "956", 2, attempt=3),
    ]
    w.put("trajectories", trajs)
    steps = [
        _step(ids.multimodal, 0, "Ask the visualizer which photo is red.",
              "print(visualizer(question='Which image is red?', image_path='red.png'))", "Output:\nred.png is red.",
              calls=[("visualizer", {"question": "Which image is red?", "image_path": "red.png"}, "red.png is red.")]),
        _step(ids.multimodal, 1, "Crop the corner of the second photo to look at it.",
              "print(image_edit(image_path='blue.png', instruction='crop the top-left corner'))",
              "Output:\ncrop.png", images=[crop_rel],
              calls=[("image_edit", {"image_path": "blue.png", "instruction": "crop the top-left corner"}, "crop.png")]),
        _step(ids.multimodal, 2, "The crop is green.", "final_answer('the first; green')", "the first; green"),
    ]
    for traj_id, answer in ((ids.text, "956"), (ids.overruled, "412.5"), (ids.rescued, "956.0"), (ids.unverified, "956")):
        steps += [
            _step(traj_id, 0, "Read the table.", "print(inspect_file_as_text(file_path='march.csv'))",
                  "Output:\n| category | amount |\n| rent | 956 |", calls=[("inspect_file_as_text", {"file_path": "march.csv"}, "rent 956")]),
            _step(traj_id, 1, "Rent is in the table.", f"final_answer('{answer}')", answer),
        ]
    w.put("steps", steps)
    w.put("verdicts", [
        _verdict(ids.multimodal, "trajectory", True, "correct"), _verdict(ids.text, "trajectory", True, "correct"),
        _verdict(ids.overruled, "trajectory", True, "correct"), _verdict(ids.rescued, "trajectory", False, "incorrect"),
        _verdict(ids.overruled, "label", False, "incorrect"), _verdict(ids.rescued, "label", True, "correct"),
    ])
    pair_id = content_id("pair", ids.multimodal, 1)
    w.put("preference_pairs", [{
        "pair_id": pair_id, "task_id": task_mm, "traj_id": ids.multimodal, "step_idx": 1, "run_id": RUN_ID,
        "chosen": {"thought": "Crop the corner of the second photo to look at it.",
                   "code": "print(image_edit(image_path='blue.png', instruction='crop the top-left corner'))",
                   "observation": "Output:\ncrop.png", "error": None},
        "rejected": {"thought": "Guess.", "code": "final_answer('blue')", "observation": "blue", "error": None},
        "judge": "dummy/judge", "chosen_score": 0.9, "rejected_score": 0.1, "rule": "margin", "reasons": [],
        "created_at": now}])
    ids.pair_ids.append(pair_id)
    w.flush()
    return ids
