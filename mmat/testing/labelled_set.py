"""A labelled set of trajectories, built in code, for measuring the rule checks (tests and bench/rules_quality.py).

About half are good; the rest are bad the way real runs go bad: fallback answers (the agent never
called final_answer), no answer at all, degenerate answers (a phrase repeated, placeholder text, the
query echoed, a refusal), the wrong tool or none, answers that contradict the files, numbers that look
right but are not, loops, runs in which every step failed, answers of the wrong type, and tasks whose
query refers to a file that is not attached or names a tool.

``catchable`` says whether code can know a case is bad: a wrong number on a task *without* an expected
answer is only visible to a verifier that reads the file, so such cases count against the rules'
recall and are left to the LM verifier. Files (images, CSVs, text) are written under ``root``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmat.programs.file_generator import FileGenResult
from mmat.programs.files import GeneratedFile
from mmat.programs.synthesis import TaskResult
from mmat.programs.trajectory import AgentStep, Trajectory
from mmat.sandbox.results import ToolCall
from mmat.signatures.queries import QuerySpec

__all__ = ["LabelledCase", "Outcome", "build_labelled_set", "run_case", "rule_figures", "ALWAYS_CAUGHT", "ALL_TOOLS"]

# Kinds the rules must reject every time (the recall target).
ALWAYS_CAUGHT = frozenset({"fallback", "no_final_answer", "degenerate"})


@dataclass(frozen=True)
class LabelledCase:
    name: str
    good: bool
    kind: str  # good, or how it is bad
    task: TaskResult
    trajectory: Trajectory
    workspace: Path
    catchable: bool = True


# --- files --------------------------------------------------------------------------------------------------
def _image(root: Path, name: str, seed: int) -> GeneratedFile:
    from PIL import Image, ImageDraw

    path = root / name
    img = Image.new("RGB", (96, 64), ((seed * 53) % 256, (seed * 97) % 256, (seed * 29) % 256))
    ImageDraw.Draw(img).rectangle((10 + seed % 20, 10, 60, 50), outline=(255, 255, 255), width=3)
    img.save(path)
    return GeneratedFile(name=name, path=path, modality="image", mime="image/png", source="pool",
                         caption=f"a test picture number {seed}")


def _text(root: Path, name: str, body: str, modality: str = "table", mime: str = "text/csv") -> GeneratedFile:
    path = root / name
    path.write_text(body)
    return GeneratedFile(name=name, path=path, modality=modality, mime=mime, source="generated")


# --- steps ----------------------------------------------------------------------------------------------------
def _call(name: str, result: str, **arguments) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, result=result)


def _step(idx: int, thought: str, code: str, observation: str, calls=(), error: str | None = None,
          answer: str | None = None, images=()) -> AgentStep:
    return AgentStep(idx=idx, thought=thought, code=code, observation=observation, tool_calls=list(calls), error=error,
                     final_answer=answer, images=list(images))


def _answer_step(idx: int, answer: str) -> AgentStep:
    return _step(idx, "I have what I need.", f"final_answer({answer!r})", f"Final answer given: {answer}",
                 [_call("final_answer", "", answer=answer)], answer=answer)


def _answered(steps: list[AgentStep], tools: list[str]) -> Trajectory:
    return Trajectory(steps=steps, answer=steps[-1].final_answer, status="answered",
                      n_errors=sum(1 for s in steps if s.error), tools=tools)


def _task(query: str, tools: list[str], files: list[GeneratedFile], answer_type: str, expected: str | None,
          root: Path) -> TaskResult:
    spec = QuerySpec(query=query, intended_tools=tools, file_needs=[], expected_answer_type=answer_type,
                     expected_answer=expected)
    return TaskResult(spec_index=0, spec=spec, query=query, workspace=root, files=FileGenResult(files=files),
                      status="verified")


ALL_TOOLS = ["visualizer", "ocr", "facedetection", "objectlocation", "segmentation", "image_edit", "image_generator",
             "inspect_file_as_text", "ask_search_agent"]


class _Builder:
    def __init__(self, root: Path):
        self.root = root
        self.cases: list[LabelledCase] = []
        self.n = 0

    def dir(self) -> Path:
        self.n += 1
        d = self.root / f"case_{self.n:02d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add(self, name: str, kind: str, task: TaskResult, trajectory: Trajectory, workspace: Path,
            catchable: bool = True) -> None:
        self.cases.append(LabelledCase(name=name, good=kind == "good", kind=kind, task=task, trajectory=trajectory,
                                       workspace=workspace, catchable=catchable))


# --- the tasks ----------------------------------------------------------------------------------------------------
def _rent_task(b: _Builder, expected: str | None = "950"):
    d = b.dir()
    f = _text(d, "march.csv", "category,amount\nrent,950\nfood,412.5\ntransport,88\n")
    task = _task("How much was the rent in March according to the attached spreadsheet?", ["inspect_file_as_text"],
                 [f], "number", expected, d)
    read = _step(0, "Read the spreadsheet.", "print(inspect_file_as_text(file_path='march.csv'))",
                 "Output:\n| category | amount |\n|---|---|\n| rent | 950 |\n| food | 412.5 |\n| transport | 88 |",
                 [_call("inspect_file_as_text", "| rent | 950 |\n| food | 412.5 |", file_path="march.csv")])
    return d, task, read


def _total_task(b: _Builder, expected: str | None = "1450.5"):
    d = b.dir()
    f = _text(d, "expenses.csv", "item,amount\nrent,950\nfood,412.5\ntransport,88\n")
    task = _task("What is the total of all amounts in the provided expenses table?", ["inspect_file_as_text"], [f],
                 "number", expected, d)
    read = _step(0, "Read the table and sum the amounts.",
                 "text = inspect_file_as_text(file_path='expenses.csv')\nprint(text)",
                 "Output:\n| item | amount |\n| rent | 950 |\n| food | 412.5 |\n| transport | 88 |",
                 [_call("inspect_file_as_text", "| rent | 950 |\n| food | 412.5 |\n| transport | 88 |", file_path="expenses.csv")])
    add = _step(1, "Add them up.", "print(950 + 412.5 + 88)", "Output:\n1450.5")
    return d, task, [read, add]


def _sign_task(b: _Builder, seed: int, text: str = "OPEN 9-17"):
    d = b.dir()
    img = _image(d, "sign.png", seed)
    task = _task("What are the opening hours written on the sign in this photo?", ["ocr"], [img], "short_text",
                 None, d)
    read = _step(0, "Read the text on the sign.", "print(ocr(image_path='sign.png'))", f"Output:\n{text}",
                 [_call("ocr", text, image_path="sign.png")])
    return d, task, read


def _faces_task(b: _Builder, seed: int, expected: str | None = "3"):
    d = b.dir()
    img = _image(d, "team.png", seed)
    task = _task("How many people's faces can you see in this picture?", ["facedetection"], [img], "number",
                 expected, d)
    detect = _step(0, "Detect the faces.", "faces = facedetection(image_path='team.png')\nprint(len(faces), faces)",
                   "Output:\n3 [[12, 8, 30, 30], [40, 9, 58, 31], [70, 10, 88, 30]]",
                   [_call("facedetection", "[[12, 8, 30, 30], [40, 9, 58, 31], [70, 10, 88, 30]]", image_path="team.png")])
    return d, task, detect


def _dog_task(b: _Builder, seed: int):
    d = b.dir()
    img = _image(d, "park.png", seed)
    task = _task("Is there a dog in this photo?", ["visualizer"], [img], "yes_no", None, d)
    look = _step(0, "Ask about the photo.", "print(visualizer(question='Is there a dog?', image_path='park.png'))",
                 "Output:\nYes, a brown dog is lying on the grass.",
                 [_call("visualizer", "Yes, a brown dog is lying on the grass.", question="Is there a dog?", image_path="park.png")])
    return d, task, look


def _log_task(b: _Builder):
    d = b.dir()
    f = _text(d, "server.log", "INFO start\nERROR disk full on /var\nINFO retry\nERROR disk full on /var\n",
              modality="text", mime="text/plain")
    task = _task("Which error appears most often in the attached log file, and how many times?",
                 ["inspect_file_as_text"], [f], "short_text", None, d)
    read = _step(0, "Read the log.", "print(inspect_file_as_text(file_path='server.log'))",
                 "Output:\nINFO start\nERROR disk full on /var\nINFO retry\nERROR disk full on /var",
                 [_call("inspect_file_as_text", "ERROR disk full on /var (x2)", file_path="server.log")])
    return d, task, read


def _edit_task(b: _Builder, seed: int):
    d = b.dir()
    img = _image(d, "room.png", seed)
    task = _task("Make this photo black and white and give me the edited picture.", ["image_edit"], [img], "image",
                 None, d)
    _image(d, "room_bw.png", seed + 100)
    edit = _step(0, "Edit the photo.", "out = image_edit(prompt='black and white', image_path='room.png')\nprint(out)",
                 "Output:\nroom_bw.png\n\nNew files: room_bw.png",
                 [_call("image_edit", "room_bw.png", prompt="black and white", image_path="room.png")],
                 images=[str(d / "room_bw.png")])
    return d, task, edit


def _fruit_task(b: _Builder, seed: int):
    d = b.dir()
    img = _image(d, "bowl.png", seed)
    task = _task("List the fruits you can see in this picture.", ["objectlocation"], [img], "list", None, d)
    find = _step(0, "Locate the fruits.", "print(objectlocation(object='fruit', image_path='bowl.png'))",
                 "Output:\n[{'label': 'apple', 'box': [3, 4, 20, 22]}, {'label': 'banana', 'box': [30, 5, 60, 20]}]",
                 [_call("objectlocation", "apple [3,4,20,22]; banana [30,5,60,20]", object="fruit", image_path="bowl.png")])
    return d, task, find


def _search_task(b: _Builder):
    d = b.dir()
    task = _task("At what temperature does water boil at the top of Mount Everest, roughly in degrees Celsius?",
                 ["ask_search_agent"], [], "number", None, d)
    search = _step(0, "Search for it.", "print(ask_search_agent(query='boiling point of water on Mount Everest'))",
                   "Output:\nAt the summit of Everest (8,849 m) water boils at about 70 °C.",
                   [_call("ask_search_agent", "about 70 °C at 8,849 m", query="boiling point of water on Mount Everest")])
    return d, task, search


def _summary_task(b: _Builder):
    d = b.dir()
    f = _text(d, "notes.md", "# Meeting\n- budget approved\n- launch moved to May\n- hire two engineers\n",
              modality="text", mime="text/markdown")
    task = _task("Summarize the decisions in the attached meeting notes in two sentences.", ["inspect_file_as_text"],
                 [f], "long_text", None, d)
    read = _step(0, "Read the notes.", "print(inspect_file_as_text(file_path='notes.md'))",
                 "Output:\n# Meeting\n- budget approved\n- launch moved to May\n- hire two engineers",
                 [_call("inspect_file_as_text", "budget approved; launch moved to May; hire two engineers", file_path="notes.md")])
    return d, task, read


# --- the set ------------------------------------------------------------------------------------------------------
def _good(b: _Builder) -> None:
    d, t, s = _rent_task(b)
    b.add("rent, bare number", "good", t, _answered([s, _answer_step(1, "950")], ALL_TOOLS), d)
    d, t, s = _rent_task(b)
    b.add("rent, in a sentence", "good", t, _answered([s, _answer_step(1, "The rent in March was 950.")], ALL_TOOLS), d)
    d, t, s = _rent_task(b, expected=None)
    b.add("rent, no expected answer", "good", t, _answered([s, _answer_step(1, "950")], ALL_TOOLS), d)
    d, t, steps = _total_task(b)
    b.add("total, two steps", "good", t, _answered([*steps, _answer_step(2, "1450.5")], ALL_TOOLS), d)
    d, t, steps = _total_task(b)
    fix = _step(1, "Sum them.", "print(sum(amounts))", "Error:\nNameError: name 'amounts' is not defined",
                error="NameError: name 'amounts' is not defined")
    redo = _step(2, "Define the amounts first.", "amounts = [950, 412.5, 88]\nprint(sum(amounts))", "Output:\n1450.5")
    b.add("total, an error fixed on the way", "good", t, _answered([steps[0], fix, redo, _answer_step(3, "1,450.50")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 1)
    b.add("sign hours", "good", t, _answered([s, _answer_step(1, "9:00 to 17:00")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 2, "CLOSED ON SUNDAYS")
    b.add("sign, another photo", "good", t, _answered([s, _answer_step(1, "Closed on Sundays")], ALL_TOOLS), d)
    d, t, s = _faces_task(b, 3)
    b.add("faces, number", "good", t, _answered([s, _answer_step(1, "3")], ALL_TOOLS), d)
    d, t, s = _faces_task(b, 4, expected=None)
    b.add("faces, as words", "good", t, _answered([s, _answer_step(1, "There are three faces in the picture.")], ALL_TOOLS), d)
    d, t, s = _faces_task(b, 5, expected="0")
    none = _step(0, "Detect the faces.", "print(facedetection(image_path='team.png'))", "Output:\n[]",
                 [_call("facedetection", "[]", image_path="team.png")])
    b.add("faces, none found", "good", t, _answered([none, _answer_step(1, "I could not find any faces, so the count is 0.")], ALL_TOOLS), d)
    d, t, s = _dog_task(b, 6)
    b.add("dog, yes", "good", t, _answered([s, _answer_step(1, "Yes")], ALL_TOOLS), d)
    d, t, s = _dog_task(b, 7)
    b.add("dog, yes with detail", "good", t, _answered([s, _answer_step(1, "Yes, a brown dog is lying on the grass.")], ALL_TOOLS), d)
    d, t, s = _log_task(b)
    b.add("log, most common error", "good", t, _answered([s, _answer_step(1, "'ERROR disk full on /var', 2 times")], ALL_TOOLS), d)
    d, t, s = _edit_task(b, 8)
    b.add("edit, image answer", "good", t, _answered([s, _answer_step(1, "room_bw.png")], ALL_TOOLS), d)
    d, t, s = _edit_task(b, 9)
    b.add("edit, image answer in a sentence", "good", t,
          _answered([s, _answer_step(1, "Here is the black and white photo: room_bw.png")], ALL_TOOLS), d)
    d, t, s = _fruit_task(b, 10)
    b.add("fruits, list", "good", t, _answered([s, _answer_step(1, "apple, banana")], ALL_TOOLS), d)
    d, t, s = _fruit_task(b, 11)
    b.add("fruits, none of a kind", "good", t, _answered([s, _answer_step(1, "None besides an apple and a banana")], ALL_TOOLS), d)
    d, t, s = _search_task(b)
    b.add("search, number with unit", "good", t, _answered([s, _answer_step(1, "About 70 °C")], ALL_TOOLS), d)
    d, t, s = _summary_task(b)
    summary = ("The team approved the budget and moved the launch to May. It also decided to hire two engineers to "
               "keep the new schedule.")
    b.add("notes, summary", "good", t, _answered([s, _answer_step(1, summary)], ALL_TOOLS), d)
    d, t, s = _summary_task(b)
    check = _step(1, "Check the second decision.", "print(inspect_file_as_text(file_path='notes.md', question='When is the launch?'))",
                  "Output:\nMay", [_call("inspect_file_as_text", "May", file_path="notes.md", question="When is the launch?")])
    b.add("notes, three steps", "good", t, _answered([s, check, _answer_step(2, "Budget approved, launch moved to May, two engineers to hire.")], ALL_TOOLS), d)
    d = b.dir()
    t = _task("¿Cuánto se pagó de alquiler en marzo según la hoja de cálculo adjunta?", ["inspect_file_as_text"],
              [_text(d, "marzo.csv", "concepto,importe\nalquiler,950\n")], "number", "950", d)
    s = _step(0, "Leer la hoja.", "print(inspect_file_as_text(file_path='marzo.csv'))", "Output:\n| alquiler | 950 |",
              [_call("inspect_file_as_text", "| alquiler | 950 |", file_path="marzo.csv")])
    b.add("rent, Spanish", "good", t, _answered([s, _answer_step(1, "950 euros")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 13, "NO TRUCKS OVER 3.5 t")
    b.add("sign, an answer that says 'cannot'", "good", t,
          _answered([s, _answer_step(1, "Trucks heavier than 3.5 t cannot use this road.")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 14)
    crops = [_step(i, f"Read part {i + 1} of the sign.", f"print(ocr(image_path='sign.png', region={i}))", f"Output:\npart {i}",
                   [_call("ocr", f"part {i}", image_path="sign.png")]) for i in range(3)]
    b.add("sign, the same tool on three regions", "good", t, _answered([*crops, _answer_step(3, "9 to 17 on weekdays")], ALL_TOOLS), d)
    d, t, s = _dog_task(b, 12)
    nodog = _step(0, "Ask about the photo.", s.code, "Output:\nNo, the photo shows a cat on a sofa.",
                  [_call("visualizer", "No, the photo shows a cat on a sofa.", question="Is there a dog?", image_path="park.png")])
    b.add("dog, no", "good", t, _answered([nodog, _answer_step(1, "No, it is a cat on a sofa.")], ALL_TOOLS), d)


def _fallback_trajectory(steps: list[AgentStep], answer: str | None, status: str = "fallback") -> Trajectory:
    return Trajectory(steps=steps, answer=answer, status=status, n_errors=sum(1 for s in steps if s.error), tools=ALL_TOOLS)


def _bad(b: _Builder) -> None:
    # fallback: the agent never called final_answer; the answer came from FallbackAnswer
    d, t, s = _rent_task(b)
    more = _step(1, "Look again.", "print(inspect_file_as_text(file_path='march.csv', question='rent?'))", "Output:\n950",
                 [_call("inspect_file_as_text", "950", file_path="march.csv", question="rent?")])
    b.add("fallback, right-looking number", "fallback", t, _fallback_trajectory([s, more], "950"), d)
    d, t, s = _sign_task(b, 20)
    b.add("fallback, plausible text", "fallback", t, _fallback_trajectory([s], "The sign says the shop opens at 9."), d)
    d, t, s = _faces_task(b, 21)
    err = _step(1, "Count.", "print(len(facess))", "Error:\nNameError: name 'facess' is not defined",
                error="NameError: name 'facess' is not defined")
    b.add("fallback after an error limit", "fallback", t,
          _fallback_trajectory([s, err, err.model_copy(update={"idx": 2})], "3", status="error_limit"), d)
    d, t, s = _dog_task(b, 22)
    b.add("fallback, the demo store's case", "fallback", t, _fallback_trajectory([s], "Your task is incomplete. " * 16), d)
    # no final answer at all
    d, t, s = _total_task(b)
    b.add("no answer, steps ran out", "no_final_answer", t, _fallback_trajectory(s, None), d)
    d, t, s = _log_task(b)
    b.add("no answer, empty string", "no_final_answer", t, _fallback_trajectory([s], ""), d)
    d, t, s = _summary_task(b)
    broken = _step(1, "", "", "Your last reply could not be read.", error="ModelOutputError: agent step: no fields")
    b.add("no answer, unreadable replies", "no_final_answer", t,
          _fallback_trajectory([s, broken, broken.model_copy(update={"idx": 2})], None, status="error_limit"), d)
    # degenerate answers given through final_answer
    d, t, s = _rent_task(b, expected=None)
    b.add("degenerate, phrase repeated", "degenerate", t, _answered([s, _answer_step(1, "rent rent rent rent rent rent rent")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 23)
    b.add("degenerate, template placeholder", "degenerate", t, _answered([s, _answer_step(1, "{answer}")], ALL_TOOLS), d)
    d, t, s = _summary_task(b)
    b.add("degenerate, query echoed", "degenerate", t, _answered([s, _answer_step(1, t.query)], ALL_TOOLS), d)
    d, t, s = _log_task(b)
    b.add("degenerate, refusal", "degenerate", t,
          _answered([s, _answer_step(1, "I am sorry, but I cannot determine that from the file.")], ALL_TOOLS), d)
    d, t, s = _fruit_task(b, 24)
    b.add("degenerate, prompt format leaked", "degenerate", t,
          _answered([s, _answer_step(1, "[[ ## answer ## ]]\napple, banana\n[[ ## completed ## ]]")], ALL_TOOLS), d)
    d, t, s = _faces_task(b, 25, expected=None)
    b.add("degenerate, N/A", "degenerate", t, _answered([s, _answer_step(1, "N/A")], ALL_TOOLS), d)
    # the wrong tool, or none
    d, t, _ = _sign_task(b, 26)
    guess = _step(0, "Describe it.", "print(visualizer(question='What does the sign say?', image_path='sign.png'))",
                  "Output:\nA shop sign.", [_call("visualizer", "A shop sign.", question="What does the sign say?", image_path="sign.png")])
    b.add("wrong tool: visualizer for OCR", "wrong_tool", t, _answered([guess, _answer_step(1, "9 to 5")], ALL_TOOLS), d)
    d, t, _ = _faces_task(b, 27, expected=None)
    b.add("no tool: guessed the count", "wrong_tool", t,
          _answered([_step(0, "Probably a few people.", "print('guess')", "Output:\nguess"), _answer_step(1, "4")], ALL_TOOLS), d)
    d, t, _ = _rent_task(b, expected=None)
    hard = _step(0, "I know rents are usually about 1000.", "rent = 1000\nprint(rent)", "Output:\n1000")
    b.add("no tool: invented the rent", "wrong_tool", t, _answered([hard, _answer_step(1, "1000")], ALL_TOOLS), d)
    # answers that contradict the files / numbers that look right and are not
    d, t, s = _rent_task(b)
    b.add("contradicts the table (expected known)", "contradicts_files", t, _answered([s, _answer_step(1, "The rent was 1,200.")], ALL_TOOLS), d)
    d, t, s = _faces_task(b, 28)
    b.add("contradicts the detector (expected known)", "contradicts_files", t, _answered([s, _answer_step(1, "5")], ALL_TOOLS), d)
    d, t, steps = _total_task(b)
    b.add("wrong sum, looks right", "wrong_number", t, _answered([*steps, _answer_step(2, "1405.5")], ALL_TOOLS), d)
    d, t, steps = _total_task(b)
    b.add("wrong sum, rounded the wrong way", "wrong_number", t, _answered([*steps, _answer_step(2, "1,451")], ALL_TOOLS), d)
    d, t, s = _rent_task(b, expected=None)
    b.add("contradicts the table (no expected answer)", "contradicts_files", t,
          _answered([s, _answer_step(1, "412.5")], ALL_TOOLS), d, catchable=False)
    d, t, steps = _total_task(b, expected=None)
    b.add("wrong sum (no expected answer)", "wrong_number", t, _answered([*steps, _answer_step(2, "1362.5")], ALL_TOOLS), d,
          catchable=False)
    # loops, failures, types, images
    d, t, s = _sign_task(b, 29)
    b.add("loop: the same call three times", "loop", t,
          _answered([s, s.model_copy(update={"idx": 1}), s.model_copy(update={"idx": 2}), _answer_step(3, "OPEN 9-17")], ALL_TOOLS), d)
    d, t, _ = _rent_task(b, expected=None)
    fails = [_step(i, "Read it.", f"print(inspect_file_as_text(file_path='march{i}.csv'))", "Error:\nToolError: no such file",
                   [], error="ToolError: no such file") for i in range(2)]
    b.add("every step failed", "all_failed", t, _fallback_trajectory(fails, "950"), d)
    d, t, s = _dog_task(b, 30)
    b.add("wrong type: yes/no asked, description given", "wrong_type", t,
          _answered([s, _answer_step(1, "A brown animal on the grass.")], ALL_TOOLS), d)
    d, t, _ = _edit_task(b, 31)
    failed_edit = _step(0, "Edit the photo.", "print(image_edit(prompt='grayscale', image_path='room.png'))",
                        "Output:\nToolError: the edit backend is not available",
                        [ToolCall(name="image_edit", arguments={"prompt": "grayscale"}, error="ToolError: not available")])
    b.add("image answer that no step produced", "wrong_type", t,
          _answered([failed_edit, _answer_step(1, "The photo is now black and white: room_gray.png")], ALL_TOOLS), d)
    d, t, s = _edit_task(b, 32)
    dup = d / "copy.png"
    dup.write_bytes(t.files.files[0].path.read_bytes())
    same = _step(0, "Edit the photo.", s.code, "Output:\ncopy.png\n\nNew files: copy.png", s.tool_calls, images=[str(dup)])
    b.add("duplicate images: the 'edit' is the input", "duplicate_images", t, _answered([same, _answer_step(1, "copy.png")], ALL_TOOLS), d)
    d, t, s = _rent_task(b)
    late = _step(1, "Answer.", "final_answer(rent)", "Error:\nNameError: name 'rent' is not defined",
                 error="NameError: name 'rent' is not defined")
    b.add("last step failed, fallback answered", "fallback", t, _fallback_trajectory([s, late], "950"), d)
    # bad tasks: the query refers to a file that is missing, or names a tool
    d = b.dir()
    img = _image(d, "left.png", 33)
    t = _task("Compare both photos: which one is brighter?", ["visualizer"], [img], "short_text", None, d)
    look = _step(0, "Look.", "print(visualizer(question='How bright?', image_path='left.png'))", "Output:\nquite bright",
                 [_call("visualizer", "quite bright", question="How bright?", image_path="left.png")])
    b.add("task: 'both photos' with one attached", "bad_task", t, _answered([look, _answer_step(1, "The left one")], ALL_TOOLS), d)
    d, t, s = _sign_task(b, 34)
    t = t.model_copy(update={"spec": t.spec.model_copy(update={"query": "Use ocr to read the opening hours on this sign photo."}),
                             "query": "Use ocr to read the opening hours on this sign photo."})
    b.add("task: the query names the tool", "bad_task", t, _answered([s, _answer_step(1, "9:00 to 17:00")], ALL_TOOLS), d)


def build_labelled_set(root: Path) -> list[LabelledCase]:
    """The labelled cases, their files written under ``root`` (a fresh directory)."""
    b = _Builder(Path(root))
    _good(b)
    _bad(b)
    return b.cases


# --- measuring ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    case: LabelledCase
    rejected_by_rules: bool
    correct: bool  # what Synthesis decided: rules passed and the verifier model said correct
    reasons: tuple[str, ...]


def run_case(program, case: LabelledCase) -> Outcome:
    """One case through ``Synthesis.verify_task`` and ``verify_trajectory``, as synthesis verifies its own runs."""
    from mmat.programs.synthesis import TrajectoryResult

    task = case.task.model_copy(deep=True)
    program.verify_task(task, ALL_TOOLS)
    if task.rules is not None and not task.rules.passed:
        return Outcome(case, True, False, tuple(task.rules.reasons))
    run = program.verify_trajectory(task, TrajectoryResult(attempt=0, controller="labelled", trajectory=case.trajectory),
                                    case.workspace)
    return Outcome(case, run.rejected_by_rules, run.correct and task.status == "verified", tuple(run.rules.reasons))


def rule_figures(outcomes: list[Outcome]) -> dict[str, float | int]:
    """Precision and recall of the rules' rejections against the labels ('bad' is the positive class)."""
    rejected = [o for o in outcomes if o.rejected_by_rules]
    bad = [o for o in outcomes if not o.case.good]
    true_rejections = sum(1 for o in rejected if not o.case.good)
    must = [o for o in bad if o.case.kind in ALWAYS_CAUGHT]
    return {
        "cases": len(outcomes), "good": len(outcomes) - len(bad), "bad": len(bad), "rejected": len(rejected),
        "precision": true_rejections / len(rejected) if rejected else 1.0,
        "recall": true_rejections / len(bad) if bad else 1.0,
        "recall_catchable": (sum(1 for o in bad if o.rejected_by_rules and o.case.catchable)
                             / max(1, sum(1 for o in bad if o.case.catchable))),
        "recall_fallback_degenerate_no_answer": sum(1 for o in must if o.rejected_by_rules) / max(1, len(must)),
        "good_rejected": sum(1 for o in rejected if o.case.good),
    }
