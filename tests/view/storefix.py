"""A small store with every kind of row the viewer shows, written straight through the store's writer.

Two synth runs (one with images, a document, a table, step images, rule and LM verdicts, a rejected
spec, a query carrying a <script>), a prefs pair, two eval runs over the same items, and LM calls.
Numbers are chosen so each report figure is distinct and checkable.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from mmat.ids import content_id
from mmat.store import Store

T0 = datetime(2026, 11, 30, 12, 0, 0)
RUN = "run-synth-a"
RUN_B = "run-synth-b"
EVAL_A, EVAL_B = "eval-base", "eval-tuned"
XSS = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned=2\">"
CANARY = "CANARY-not-in-any-page"  # a file that exists outside the blob store: never served


def png(color: tuple[int, int, int], size=(48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _docx(text: str) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Quarterly note", level=1)
    d.add_paragraph(text)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _embedding(seed: int, near: np.ndarray | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=384) if near is None else near + rng.normal(scale=0.01, size=384)
    return [float(x) for x in v / np.linalg.norm(v)]


def _metrics(correct: float) -> dict:
    from mmat.eval import Accuracy, EvalMetrics, GroupMetrics

    greedy = GroupMetrics(n_items=2, n_errors=0, ans_acc={"mat": Accuracy(correct=correct, counted=2)}, code_exec=0.75)
    return EvalMetrics(bench="gta", n_items=2, best_of_n=1, counted=2, greedy=greedy).model_dump(mode="json")


def build_store(home: Path) -> dict:
    """Write the fixture rows into ``home/mmat.duckdb``; return the ids the tests need."""
    home.mkdir(parents=True, exist_ok=True)
    (home.parent / "secret.txt").write_text(CANARY)
    ids: dict = {}
    with Store.open(home / "mmat.duckdb") as store:
        put = store.writer.put
        cat, _ = store.put_blob(png((200, 30, 30)), ".png")
        chart, _ = store.put_blob(png((30, 30, 200), (64, 64)), ".png")
        doc, _ = store.put_blob(_docx("Revenue grew by 12 percent in Q3."), ".docx")
        table, _ = store.put_blob(b"city,rent\nParis,1200\nLyon,<b>800</b>\n", ".csv")
        sha = lambda rel: Path(rel).name.split(".")[0]  # noqa: E731
        ids.update(cat=sha(cat), chart=sha(chart), doc=sha(doc), table=sha(table))

        put("runs", [
            {"run_id": RUN, "kind": "synth", "command": "mmat synth --tasks 3", "status": "done",
             "settings": {"teacher": "dummy/teacher", "dedup_threshold": 0.9}, "summary": {"tasks": 4},
             "started_at": T0, "finished_at": T0 + timedelta(seconds=90)},
            {"run_id": RUN_B, "kind": "synth", "command": "mmat synth --tasks 1", "status": "running",
             "settings": {}, "started_at": T0 - timedelta(days=1), "finished_at": None},
            {"run_id": "run-prefs", "kind": "prefs", "command": "mmat prefs -k 3", "status": "done", "settings": {},
             "started_at": T0 - timedelta(hours=2), "finished_at": T0 - timedelta(hours=1)},
        ])
        tasks = [
            # task, domain, query, status, reason, intended tools, answer type
            ("task-img", "geography", "How many red squares are in this photo? Also read the chart.", "solved", None, ["ocr", "visualizer"], "number"),
            ("task-doc", "finance", "By how much did revenue grow according to the attached note and table?", "solved", None, ["inspect_file_as_text"], "number"),
            ("task-xss", "finance", f"Evil {XSS} query", "failed", "none of 1 trajectories was verified correct", ["ocr"], "text"),
            ("task-files", "geography", "Which city in the attached photo 3?", "rejected", "files: photo_3.jpg: no pool image matched", ["ocr"], "text"),
            ("task-dup", "geography", "How many red squares are in this picture?", "rejected", "near-duplicate of an earlier query", None, None),
        ]
        put("tasks", [{
            "task_id": t, "run_id": RUN, "seed_idx": i, "split": "train", "domain": d, "query": q, "original_query": q,
            "intended_tools": tools, "answer_type": at, "status": s, "status_reason": r, "created_at": T0 + timedelta(seconds=10 * i),
        } for i, (t, d, q, s, r, tools, at) in enumerate(tasks)])
        put("tasks", [{"task_id": "task-b", "run_id": RUN_B, "seed_idx": 0, "split": "train", "domain": "sports",
                       "query": "Who won?", "intended_tools": ["ocr"], "status": "solved", "created_at": T0 - timedelta(days=1)}])
        base = np.asarray(_embedding(1))
        put("query_embeddings", [
            {"task_id": "task-img", "embedding": [float(x) for x in base]},
            {"task_id": "task-doc", "embedding": _embedding(2)},
            {"task_id": "task-xss", "embedding": _embedding(3, near=base)},  # a near-duplicate of task-img
            {"task_id": "task-files", "embedding": _embedding(4)},
        ])
        put("files", [
            {"file_id": "f-cat", "task_id": "task-img", "position": 0, "name": "photo.png", "path": cat, "sha256": ids["cat"],
             "modality": "image", "mime": "image/png", "bytes": 100, "source": "pool", "caption": "red squares"},
            {"file_id": "f-doc", "task_id": "task-doc", "position": 0, "name": "note.docx", "path": doc, "sha256": ids["doc"],
             "modality": "document", "mime": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
             "bytes": 1000, "source": "generated"},
            {"file_id": "f-table", "task_id": "task-doc", "position": 1, "name": "rents.csv", "path": table, "sha256": ids["table"],
             "modality": "table", "mime": "text/csv", "bytes": 40, "source": "generated"},
            {"file_id": "f-xss", "task_id": "task-xss", "position": 0, "name": "<b>bold</b>.png", "path": cat, "sha256": ids["cat"],
             "modality": "image", "mime": "image/png", "bytes": 100, "source": "pool"},
        ])
        trajs = [
            # traj, task, verdict, status, n_steps, answer, created offset
            ("traj-img", "task-img", "correct", "answered", 2, "3", 20),
            ("traj-doc", "task-doc", "correct", "answered", 3, "12 percent", 40),
            ("traj-xss", "task-xss", "incorrect", "fallback", 1, f"answer {XSS}", 70),
        ]
        put("trajectories", [{
            "traj_id": tr, "task_id": tk, "run_id": RUN, "attempt": 0, "controller": "dummy/agent", "answer": a,
            "status": st, "verdict": v, "n_steps": n, "n_errors": 0, "tools": ["ocr", "visualizer", "inspect_file_as_text"],
            "multimodal": True, "origin": "synth", "created_at": T0 + timedelta(seconds=off),
        } for tr, tk, v, st, n, a, off in trajs])
        put("trajectories", [{"traj_id": "traj-b", "task_id": "task-b", "run_id": RUN_B, "attempt": 0, "controller": "dummy/agent",
                              "answer": "x", "status": "answered", "verdict": "correct", "n_steps": 1, "tools": ["ocr"],
                              "multimodal": False, "origin": "synth", "created_at": T0 - timedelta(days=1)}])
        call = lambda name, args, result: {"name": name, "arguments": args, "result": result, "duration_ms": 5.0, "error": None}  # noqa: E731
        put("steps", [
            {"traj_id": "traj-img", "idx": 0, "thought": "Read the text first.", "code": "text = ocr(image='photo.png')\nprint(text)",
             "observation": "STEP0-OBSERVATION: 3 squares", "tool_calls": [call("ocr", {"image": "photo.png"}, "3 squares")],
             "error": None, "images": [], "duration_ms": 12.0},
            {"traj_id": "traj-img", "idx": 1, "thought": "Plot and answer.", "code": "visualizer(x=1)\nfinal_answer('3')",
             "observation": "done", "tool_calls": [call("visualizer", {"x": 1}, "chart.png"), call("final_answer", {"answer": "3"}, "3")],
             "error": None, "images": [chart], "duration_ms": 30.0},
            {"traj_id": "traj-doc", "idx": 0, "thought": "Open the note.", "code": "print(inspect_file_as_text(file_path='note.docx'))",
             "observation": "Revenue grew by 12 percent", "tool_calls": [call("inspect_file_as_text", {"file_path": "note.docx"}, "Revenue grew")],
             "error": None, "images": [], "duration_ms": 10.0},
            {"traj_id": "traj-doc", "idx": 1, "thought": "Oops.", "code": "1/0", "observation": "", "tool_calls": [],
             "error": "ZeroDivisionError: division by zero", "images": [], "duration_ms": 1.0},
            {"traj_id": "traj-doc", "idx": 2, "thought": "Answer.", "code": "final_answer('12 percent')", "observation": "",
             "tool_calls": [call("final_answer", {"answer": "12 percent"}, "12 percent")], "error": None, "images": [], "duration_ms": 1.0},
            {"traj_id": "traj-xss", "idx": 0, "thought": f"thinking {XSS}", "code": f"print('{XSS}')", "observation": XSS,
             "tool_calls": [call("ocr", {"image": XSS}, XSS)], "error": None, "images": [], "duration_ms": 3.0},
            {"traj_id": "traj-b", "idx": 0, "thought": "t", "code": "final_answer('x')", "observation": "", "tool_calls": [],
             "error": None, "images": [], "duration_ms": 1.0},
        ])
        verdict = lambda kind, subject, verifier, passed, reasons: {  # noqa: E731
            "verdict_id": content_id("v", kind, subject, verifier), "subject_kind": kind, "subject_id": subject,
            "verifier": verifier, "model": None if verifier == "rules" else "dummy/verifier", "passed": passed,
            "verdict": ("correct" if passed else "incorrect") if kind == "trajectory" else ("pass" if passed else "reject"),
            "score": None, "reasons": reasons, "created_at": T0}
        put("verdicts", [
            verdict("task", "task-img", "query_file", True, ["the photo shows squares"]),
            verdict("task", "task-doc", "query_file", True, ["ok"]),
            verdict("task", "task-xss", "query_file", True, ["ok"]),
            verdict("trajectory", "traj-img", "trajectory", True, ["answer matches the OCR"]),
            verdict("trajectory", "traj-doc", "trajectory", True, ["12 percent is in the note"]),
            verdict("trajectory", "traj-xss", "trajectory", False, [f"reason {XSS}", "answer is 42 characters of junk"]),
            verdict("trajectory", "traj-xss", "rules", False, ["final_answer_called: final_answer was never called (status fallback)",
                                                               "answer_not_degenerate: the answer repeats one phrase 3 times"]),
            verdict("trajectory", "traj-img", "rules", True, []),
            verdict("task", "task-img", "rules", True, []),
            verdict("task", "task-xss", "rules", True, []),
            {**verdict("trajectory", "traj-xss", "expected_answer", False, []), "verdict": "mismatch", "model": "gaia"},
            # an older verdict that `mmat verify` superseded: only the newest per subject and verifier counts
            {**verdict("trajectory", "traj-doc", "rules", False, ["last_step_clean: the last step raised"]),
             "verdict_id": "old-rules-doc", "created_at": T0 - timedelta(hours=1)},
            {**verdict("trajectory", "traj-doc", "rules", True, []), "verdict_id": "new-rules-doc"},
        ])
        put("preference_pairs", [{
            "pair_id": "pair-1", "task_id": "task-img", "traj_id": "traj-img", "step_idx": 1, "run_id": "run-prefs",
            "chosen": {"thought": "Plot and answer.", "code": "final_answer('3')", "observation": "3", "error": None},
            "rejected": {"thought": f"Guess {XSS}", "code": "final_answer('7')", "observation": "7", "error": "wrong"},
            "judge": "dummy/judge", "chosen_score": 0.9, "rejected_score": 0.2, "rule": "margin",
            "reasons": ["the chosen step uses the OCR result"], "created_at": T0}])
        for run, answers, controller in ((EVAL_A, ("3", "no"), "local/smollm2-135m"), (EVAL_B, ("3", "yes"), "local/adapter")):
            put("eval_runs", [{"eval_run_id": run, "bench": "gta", "bench_path": "tiny.json", "controller": controller,
                               "best_of_n": 1, "settings": {}, "n_items": 2,
                               "metrics": _metrics(1.0 if run == EVAL_A else 2.0),
                               "created_at": T0 + timedelta(hours=1 if run == EVAL_A else 2)}])
            put("eval_items", [
                {"eval_run_id": run, "item_key": "0", "sample_idx": 0, "question": "How many squares?", "answer": answers[0],
                 "gt": {"whitelist": [["3"]]}, "counted": True, "ans_acc": {"mat": 1.0}, "tool_precision": 1.0,
                 "tool_recall": 1.0, "tool_exact": True, "code_exec": 1.0, "n_steps": 2, "traj_id": "traj-img"},
                {"eval_run_id": run, "item_key": "1", "sample_idx": 0, "question": f"Is it {XSS}?", "answer": answers[1],
                 "gt": {"whitelist": [["yes"]]}, "counted": True, "ans_acc": {"mat": 1.0 if answers[1] == "yes" else 0.0},
                 "tool_precision": 0.5, "tool_recall": 1.0, "tool_exact": False, "code_exec": 0.5, "n_steps": 3, "traj_id": None},
            ])
        put("lm_calls", [{
            "call_id": f"call-{i}", "run_id": RUN, "module": module, "model": model, "prompt_tokens": 100 + i,
            "completion_tokens": 10 * (i + 1), "cost": 0.01 * (i + 1), "latency_ms": 100.0 * (i + 1), "cache_hit": i == 0,
            "error": "rate limited" if i == 5 else None, "started_at": T0 + timedelta(seconds=5 * i),
        } for i, (module, model) in enumerate([("QueryGenerator", "dummy/teacher")] * 2 + [("CodeAgent", "dummy/agent")] * 4
                                               + [("TrajectoryVerifier", "dummy/verifier")])])
        store.writer.flush()
    return ids
