"""The demo's last step: the tuned student against its base model on a tiny held-out GTA-format set.

The set is written, not downloaded: two rendered signs (a number, a word) that OCR reads, in GTA's
``dataset.json`` layout with whitelist answers, so the real GTA loader and scorers run on it. Both
models are evaluated through the public `mmat eval` entry point and compared with `mmat eval compare`'s
function, so the figures are the ones those commands would print.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from mmat.config import Settings

__all__ = ["HELDOUT_ITEMS", "write_heldout_gta", "compare_student", "StudentComparison"]

# (file name, text on the sign, question, answer aliases)
HELDOUT_ITEMS = [
    ("sign_number.png", "PRICE 42", "What number is written on the sign in this image?", ["42"]),
    ("sign_word.png", "TAXI", "Which word is written on the sign in this image?", ["taxi"]),
]


def _sign(path: Path, text: str) -> None:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (480, 200), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 470, 190), outline=(30, 30, 30), width=6)
    draw.text((240, 100), text, fill=(20, 20, 20), font=ImageFont.load_default(size=72), anchor="mm")
    image.save(path)


def write_heldout_gta(folder: Path) -> Path:
    """Write the images and ``dataset.json`` (GTA's format) into ``folder``; returns the dataset path."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = {}
    for i, (name, text, question, answers) in enumerate(HELDOUT_ITEMS):
        _sign(folder / name, text)
        dataset[str(i)] = {
            "tools": [{"name": "OCR", "description": "Recognize the text in an image."}],
            "files": [{"type": "image", "path": name}],
            "dialogs": [
                {"role": "user", "content": question},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "OCR", "arguments": {"image": name}}}]},
                {"role": "tool", "name": "OCR", "content": text},
                {"role": "assistant", "content": answers[0]},
            ],
            "gt_answer": {"whitelist": [answers], "blacklist": None},
        }
    path = folder / "dataset.json"
    path.write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    return path


class StudentComparison(BaseModel):
    base_run: str
    tuned_run: str
    table: str  # `mmat eval compare BASE TUNED`, rendered

    def render(self) -> str:
        return "\n".join([f"held-out eval: base {self.base_run[:12]} vs tuned {self.tuned_run[:12]}", self.table.rstrip(),
                          f"  (again: mmat eval compare {self.base_run} {self.tuned_run})"])


def compare_student(settings: Settings, *, base: str, tuned: str, bench: Path, max_steps: int = 2) -> StudentComparison:
    """Evaluate ``base`` and ``tuned`` (controller model strings) on ``bench`` and compare them."""
    from mmat.eval import compare_runs, render_compare
    from mmat.pipeline.evaluate import EvalRequest, run_benchmark
    from mmat.store import open_store

    runs = []
    for controller in (base, tuned):
        eval_settings = settings.model_copy(update={"controller": controller, "agent_max_steps": max_steps})
        result, _ = run_benchmark(eval_settings, EvalRequest(bench=bench, kind="gta"), progress=False)
        runs.append(result.eval_run_id)
    with open_store(settings, read_only=True) as store:
        comparison = compare_runs(store, runs[0], runs[1])
    return StudentComparison(base_run=runs[0], tuned_run=runs[1],
                             table=render_compare(comparison, run_a=runs[0][:12], run_b=runs[1][:12]))
