"""The one-tool-call pattern a small local controller's code is decoded under."""

import re

from mmat.programs import GeneratedFile
from mmat.programs.action_grammar import action_pattern


def files(*names):
    return [GeneratedFile(name=n, path=f"/tmp/{n}", modality="image" if n.endswith(".png") else "text", mime="", source="user")
            for n in names]


def test_one_call_of_a_listed_tool_on_the_tasks_files_or_a_final_answer():
    pattern = re.compile(action_pattern(["ocr", "visualizer", "inspect_file_as_text"], files("deep-sky.png", "notes.txt")))
    for code in ["print(ocr(image_path='deep-sky.png'))",
                 "print(visualizer(question='What is in the sky?', image_path='deep-sky.png'))",
                 "print(inspect_file_as_text(file_path='notes.txt'))",  # the optional question is left out
                 "final_answer('Orion')", "final_answer(42)", "final_answer(-3.5)"]:
        assert pattern.fullmatch(code), code
    for code in ["print(ocr(image_path='other.png'))",  # not a file of the task
                 "print(ocr(image_path='notes.txt'))",  # image tools take the images
                 "print(facedetection(image_path='deep-sky.png'))",  # not offered
                 "The answer is in the image.",
                 "print(ocr(image_path='deep-sky.png'))\nfinal_answer('x')",  # one call per step
                 "final_answer('it\\'s')", "final_answer('')"]:
        assert not pattern.fullmatch(code), code


def test_without_files_any_plain_file_name_and_unquotable_names_are_left_out():
    assert re.fullmatch(action_pattern(["ocr"], []), "print(ocr(image_path='made_by_step_1.png'))")
    pattern = action_pattern(["ocr"], files("it's.png", "ok.png"))
    assert re.fullmatch(pattern, "print(ocr(image_path='ok.png'))") and "image_path='(ok\\.png)'" in pattern
