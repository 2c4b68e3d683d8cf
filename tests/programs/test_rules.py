"""Each rule check on hand-made subjects that must pass and subjects that must fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from mmat.config import load_settings
from mmat.errors import ConfigError
from mmat.programs.files import GeneratedFile
from mmat.programs.rules import (
    CHECK_NAMES,
    RuleOptions,
    TaskSubject,
    TrajectorySubject,
    check_task,
    check_trajectory,
    compare_expected,
    read_regular_file,
    rules_markdown,
)
from mmat.programs.trajectory import AgentStep, Trajectory
from mmat.sandbox.results import ToolCall

README = Path(__file__).resolve().parents[2] / "README.md"


# --- builders ---------------------------------------------------------------------------------------------------
def image(path: Path, color=(200, 30, 30), size=(32, 32)) -> GeneratedFile:
    Image.new("RGB", size, color).save(path)
    return GeneratedFile(name=path.name, path=path, modality="image", mime="image/png", source="pool")


def table(path: Path) -> GeneratedFile:
    path.write_text("category,amount\nrent,950\n")
    return GeneratedFile(name=path.name, path=path, modality="table", mime="text/csv", source="generated")


def step(idx=0, code="print(1)", tools=(), error=None, answer=None, images=(), observation="") -> AgentStep:
    return AgentStep(idx=idx, thought="t", code=code, observation=observation, error=error, final_answer=answer,
                     images=list(images), tool_calls=[ToolCall(name=t, result="ok") for t in tools])


def good_trajectory(answer="950", tools=("inspect_file_as_text",)) -> Trajectory:
    return Trajectory(steps=[step(0, "r = inspect_file_as_text('march.csv')\nprint(r)", tools),
                             step(1, f"final_answer({answer!r})", ("final_answer",), answer=answer)],
                      answer=answer, status="answered", n_errors=0)


def run(trajectory=None, **kw) -> TrajectorySubject:
    defaults = {"query": "How much was the rent in March in the attached spreadsheet?", "intended_tools": ["inspect_file_as_text"],
                "answer_type": "number", "expected_answer": None}
    return TrajectorySubject(trajectory=trajectory or good_trajectory(), **(defaults | kw))


def failed_checks(verdict) -> list[str]:
    return [f.check for f in verdict.failures]


def only(check: str, subject, options=None):
    """The verdict with every other check turned off."""
    off = frozenset(CHECK_NAMES) - {check}
    opts = RuleOptions(off=off, **(options or {}))
    return (check_task if isinstance(subject, TaskSubject) else check_trajectory)(subject, opts)


# --- task checks ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query,files,ok", [
    ("What is the animal in this photo doing?", ["img"], True),
    ("Compare these two photos: which one shows more people?", ["img", "img"], True),
    ("Compare both pictures and tell me which is brighter.", ["img"], False),
    ("What does the third image show?", ["img", "img"], False),
    ("What is the animal in this photo doing?", [], False),
    ("How much was the rent in the attached spreadsheet?", ["csv"], True),
    ("How much was the rent in the attached spreadsheet?", ["img"], False),
    ("Sum the amounts in the provided table.", [], False),
    ("Is the table in this photo made of wood?", ["img"], True),  # a table in a photo is not a file
    ("What is the capital of France, and how many letters does it have?", [], True),
    ("Read the attached file and tell me the total.", ["img"], True),  # any file will do for 'the attached file'
])
def test_files_attached(tmp_path, query, files, ok):
    made = [image(tmp_path / f"p{i}.png") if kind == "img" else table(tmp_path / f"t{i}.csv") for i, kind in enumerate(files)]
    verdict = only("files_attached", TaskSubject(query=query, files=made))
    assert verdict.passed is ok, verdict.reasons


def test_a_picture_the_task_asks_to_generate_needs_no_attachment():
    task = TaskSubject(query="Generate a picture of a red bicycle and tell me what color the picture is.",
                       intended_tools=["image_generator"])
    assert only("files_attached", task).passed


def test_images_decode(tmp_path):
    good = image(tmp_path / "ok.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    tiny = image(tmp_path / "tiny.png", size=(2, 2))
    broken = GeneratedFile(name="bad.png", path=bad, modality="image", mime="image/png", source="pool")
    missing = GeneratedFile(name="gone.png", path=tmp_path / "gone.png", modality="image", mime="image/png", source="pool")
    assert only("images_decode", TaskSubject(query="q", files=[good])).passed
    verdict = only("images_decode", TaskSubject(query="q", files=[good, broken, tiny, missing]))
    [reason] = verdict.reasons
    assert "bad.png: UnidentifiedImageError" in reason and "tiny.png: only 2x2 pixels" in reason
    assert "gone.png: FileNotFoundError" in reason


def test_images_decode_does_not_follow_a_planted_link(tmp_path):
    canary = tmp_path / "secret.png"
    image(canary)
    link = tmp_path / "photo.png"
    link.symlink_to(canary)
    linked = GeneratedFile(name="photo.png", path=link, modality="image", mime="image/png", source="generated")
    verdict = only("images_decode", TaskSubject(query="q", files=[linked]))
    assert not verdict.passed and "photo.png: UnsafePath" in verdict.reasons[0] and "symbolic link" in verdict.reasons[0]
    with pytest.raises(OSError):
        read_regular_file(link)


def test_a_fifo_fails_the_check_instead_of_blocking(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    f = GeneratedFile(name="photo.png", path=fifo, modality="image", mime="image/png", source="generated")
    verdict = only("images_decode", TaskSubject(query="q", files=[f]))
    assert "not a regular file" in verdict.reasons[0]


def test_tools_available():
    assert only("tools_available", TaskSubject(query="q", intended_tools=["ocr"], available_tools=["ocr", "visualizer"])).passed
    verdict = only("tools_available", TaskSubject(query="q", intended_tools=["ocr", "calculator"], available_tools=["ocr"]))
    assert verdict.reasons == ["tools_available: intended tool(s) not available: calculator"]


@pytest.mark.parametrize("query,ok", [
    ("What does the sign in this photo say?", True),
    ("Use OCR to read the sign in this photo.", False),
    ("Call inspect_file_as_text on the attached report and give the total.", False),
    ("Which visualizer setting shows the faces?", False),
    ("How many faces are in this picture?", True),  # 'faces' is not the tool facedetection
])
def test_query_names_no_tool(query, ok):
    assert only("query_names_no_tool", TaskSubject(query=query)).passed is ok


@pytest.mark.parametrize("query,check,ok", [
    ("What is the total rent in the attached table?", "query_length", True),
    ("Total?", "query_length", False),
    ("x" * 1600, "query_length", False),
    ("What is the total rent in the attached table?", "query_language", True),
    ("这张照片里有几只猫？", "query_language", True),
    ("12345 67890 !!!! ???? 1111", "query_language", False),
    ("photo photo photo photo photo photo photo", "query_language", False),
    ("Rent total", "query_language", False),
])
def test_query_length_and_language(query, check, ok):
    assert only(check, TaskSubject(query=query)).passed is ok


# --- trajectory checks ---------------------------------------------------------------------------------------------
def test_a_good_trajectory_passes_every_check():
    verdict = check_trajectory(run(expected_answer="950"))
    assert verdict.passed and verdict.failures == [] and set(verdict.checked) == {
        "final_answer_called", "last_step_clean", "intended_tool_called", "answer_present", "answer_bounded",
        "answer_type", "answer_not_degenerate", "no_repeated_code", "not_all_steps_failed", "image_count",
        "no_duplicate_images", "expected_answer"}


def test_fallback_fails_unless_the_setting_allows_it():
    t = good_trajectory().model_copy(update={"status": "fallback"})
    verdict = only("final_answer_called", run(t))
    assert verdict.reasons == ["final_answer_called: final_answer was never called (the steps ran out; status fallback): "
                               "the answer came from the fallback"]
    assert only("final_answer_called", run(t), {"allow_fallback": True}).passed
    t = t.model_copy(update={"status": "error_limit"})
    assert not only("final_answer_called", run(t)).passed


def test_last_step_clean():
    t = good_trajectory()
    t.steps[-1].error = "NameError: name 'x' is not defined"
    assert only("last_step_clean", run(t)).reasons == ["last_step_clean: the last step failed: NameError: name 'x' is not defined"]
    assert only("last_step_clean", run()).passed


def test_intended_tool_called():
    assert only("intended_tool_called", run()).passed
    wrong = good_trajectory(tools=("visualizer",))
    assert only("intended_tool_called", run(wrong)).reasons == [
        "intended_tool_called: none of the intended tools (inspect_file_as_text) was called; it called visualizer"]
    assert only("intended_tool_called", run(wrong, intended_tools=[])).passed


@pytest.mark.parametrize("answer,check,ok", [
    (None, "answer_present", False),
    ("   ", "answer_present", False),
    ("950", "answer_present", True),
    ("9" * 2001, "answer_bounded", False),
    ("9" * 2000, "answer_bounded", True),
])
def test_answer_present_and_bounded(answer, check, ok):
    t = good_trajectory().model_copy(update={"answer": answer})
    assert only(check, run(t)).passed is ok


@pytest.mark.parametrize("kind,answer,ok", [
    ("number", "950", True),
    ("number", "The rent in March was $1,250.50.", True),
    ("number", "three cats", True),
    ("number", "The rent is shown in the table.", False),
    ("yes_no", "Yes", True),
    ("yes_no", "No, the photo shows a dog.", True),
    ("yes_no", "The photo shows a dog.", False),
    ("short_text", "anything", True),
])
def test_answer_type(kind, answer, ok):
    assert only("answer_type", run(good_trajectory(answer), answer_type=kind)).passed is ok


def test_an_image_answer_must_name_a_file_a_step_made(tmp_path):
    made = step(0, "image_edit(...)", ("image_edit",), observation="Output:\nsaved\n\nNew files: edited.png")
    t = Trajectory(steps=[made, step(1, "final_answer('edited.png')", answer="edited.png")], answer="edited.png",
                   status="answered", n_errors=0)
    assert only("answer_type", run(t, answer_type="image")).passed
    t2 = t.model_copy(update={"answer": "I edited the picture."})
    assert "names no image file" in only("answer_type", run(t2, answer_type="image")).reasons[0]
    t3 = t.model_copy(update={"answer": "other.png"})
    assert "which no step produced" in only("answer_type", run(t3, answer_type="image")).reasons[0]
    image(tmp_path / "other.png")
    assert only("answer_type", run(t3, answer_type="image", workspace=tmp_path)).passed


@pytest.mark.parametrize("answer,ok", [
    ("Your task is incomplete. " * 16, False),  # the demo store's 399 characters
    ("{answer}", False),
    ("<answer>", False),
    ("[insert the total here]", False),
    ("N/A", False),
    ("I cannot determine the rent from the information given.", False),
    ("How much was the rent in March in the attached spreadsheet?", False),  # the query echoed
    ("[[ ## answer ## ]] 950", False),
    ("no no no no no no no", False),
    ("950", True),
    ("The rent in March was 950, the largest expense of the month.", True),
    ("I could not find any faces, so the count is 0.", True),
    ("None", True),
])
def test_answer_not_degenerate(answer, ok):
    t = good_trajectory().model_copy(update={"answer": answer})
    verdict = only("answer_not_degenerate", run(t))
    assert verdict.passed is ok, verdict.reasons


def test_no_repeated_code():
    loop = [step(i, "print(ocr('sign.png'))", ("ocr",)) for i in range(3)]
    t = Trajectory(steps=[*loop, step(3, "final_answer('STOP')", answer="STOP")], answer="STOP", status="answered", n_errors=0)
    assert only("no_repeated_code", run(t)).reasons == [
        "no_repeated_code: the same code ran 3 times: \"print(ocr('sign.png'))\""]
    t.steps.pop(0)
    assert only("no_repeated_code", run(t)).passed


def test_not_all_steps_failed():
    t = Trajectory(steps=[step(0, "x", error="SyntaxError: bad"), step(1, "y", error="NameError: y")], answer="950",
                   status="fallback", n_errors=2)
    assert only("not_all_steps_failed", run(t)).reasons == ["not_all_steps_failed: every one of the 2 step(s) failed"]
    assert only("not_all_steps_failed", run()).passed


def test_image_count_and_duplicates(tmp_path):
    files = [image(tmp_path / f"p{i}.png", color=(i * 40, 0, 0)) for i in range(3)]
    assert only("image_count", run(files=files)).passed
    extra = image(tmp_path / "out.png", color=(0, 0, 250))
    t = good_trajectory()
    t.steps[0].images = [str(extra.path)]
    assert "4 images" in only("image_count", run(t, files=files)).reasons[0]
    assert only("no_duplicate_images", run(t, files=files)).passed
    copy = tmp_path / "copy.png"
    copy.write_bytes(files[0].path.read_bytes())
    t.steps[0].images = [str(copy)]
    assert only("no_duplicate_images", run(t, files=files)).reasons == [
        "no_duplicate_images: images p0.png and copy.png are the same picture"]
    t.steps[0].images = [str(tmp_path / "vanished.png")]
    assert "vanished.png: FileNotFoundError" in only("no_duplicate_images", run(t, files=files)).reasons[0]


@pytest.mark.parametrize("answer,expected,exact,consistent", [
    ("950", "950", True, True),
    ("The rent was 950.", "950", False, True),
    ("The rent was 1,250.", "950", False, False),
    ("Paris", "paris", True, True),
    ("The capital is Paris.", "Paris", False, True),
    ("The capital is Lyon.", "Paris", False, False),
    ("No, it is a dog.", "yes", False, False),
    ("apples, pears", "apples; pears", True, True),
])
def test_expected_answer_under_the_gaia_scorer(answer, expected, exact, consistent):
    result = compare_expected(answer, expected)
    assert (result.exact, result.consistent) == (exact, consistent)
    verdict = only("expected_answer", run(good_trajectory(answer), expected_answer=expected))
    assert verdict.passed is consistent


def test_a_check_that_crashes_is_a_failed_check(monkeypatch):
    import mmat.programs.rules as rules

    def boom(subject, options):
        raise RuntimeError("disk on fire")

    broken = rules.Check("answer_present", "trajectory", "d", boom)
    monkeypatch.setattr(rules, "TRAJECTORY_CHECKS", (broken,))
    verdict = rules.check_trajectory(run())
    assert not verdict.passed and verdict.reasons == ["answer_present: the check could not run: RuntimeError: disk on fire"]


def test_settings_turn_checks_off_by_name():
    t = good_trajectory().model_copy(update={"status": "fallback"})
    options = RuleOptions.from_settings(load_settings(rules_off=["final_answer_called"]))
    verdict = check_trajectory(run(t), options)
    assert verdict.passed and "final_answer_called" not in verdict.checked
    with pytest.raises(ConfigError, match="unknown rule check.*final_answer_calld.*choose from"):
        RuleOptions.from_settings(load_settings(rules_off=["final_answer_calld"]))


def test_rules_off_from_the_environment(monkeypatch):
    monkeypatch.setenv("MMAT_RULES_OFF", '["query_language", "image_count"]')
    assert RuleOptions.from_settings(load_settings()).off == {"query_language", "image_count"}


def test_readme_lists_every_check():
    assert rules_markdown() in README.read_text(), (
        "README rule table is stale: replace it with `python -c 'from mmat.programs.rules import rules_markdown as m; print(m())'`")


def test_a_step_image_behind_a_planted_directory_link_is_not_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    image(outside / "secret.png")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "out").symlink_to(outside, target_is_directory=True)
    t = good_trajectory()
    t.steps[0].images = [str(workspace / "out" / "secret.png")]
    verdict = only("no_duplicate_images", run(t, workspace=workspace))
    assert not verdict.passed and "secret.png: UnsafePath" in verdict.reasons[0]
