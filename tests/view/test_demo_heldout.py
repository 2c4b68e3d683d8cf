"""The demo's closing loop: a held-out GTA-format set written on the spot, base vs tuned through `mmat eval`."""

from mmat.config import load_settings
from mmat.eval import load_gta
from mmat.pipeline.heldout import HELDOUT_ITEMS, compare_student, write_heldout_gta
from mmat.testing import DummyLM
from mmat.testing.scripted import field


def test_the_heldout_file_loads_with_the_gta_loader(tmp_path):
    report = load_gta(write_heldout_gta(tmp_path / "heldout"))
    assert report.skipped == [] and len(report.items) == len(HELDOUT_ITEMS)
    for item, (name, _, question, answers) in zip(report.items, HELDOUT_ITEMS):
        assert item.question == question and item.files[0].name == name and item.files[0].read_bytes()[:4] == b"\x89PNG"
        assert item.gold_tool_calls == ["ocr"] and item.gt["whitelist"] == [answers]


def _answers(right: bool):
    def respond(messages, fields):
        if fields == ["answer"]:
            return {"answer": "unknown"}
        task = field(messages, "task") or ""
        answer = ("42" if "number" in task else "taxi") if right else "no idea"
        return {"thought": "Answer from the sign.", "code": f"final_answer({answer!r})"}
    return respond


def test_base_and_tuned_are_evaluated_and_compared(mmat_home):
    DummyLM(_answers(False), name="base-student")
    DummyLM(_answers(True), name="tuned-student")
    settings = load_settings(home=mmat_home, step_timeout_s=20, concurrency=1)
    bench = write_heldout_gta(mmat_home / "demo_heldout")
    comparison = compare_student(settings, base="dummy/base-student", tuned="dummy/tuned-student", bench=bench)
    assert comparison.base_run != comparison.tuned_run
    text = comparison.render()
    row = next(line for line in text.splitlines() if "greedy.ans_acc.mat" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[1:] == ["0.00", "100.00", "+100.00"], row
    assert f"mmat eval compare {comparison.base_run} {comparison.tuned_run}" in text
