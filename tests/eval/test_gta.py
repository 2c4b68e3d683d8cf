"""The GTA loader on small files written here, in GTA's released format."""

import json

import pytest

from mmat.errors import ConfigError
from mmat.eval.gta import load_gta
from .helpers import make_image


def _dialogs(question, calls):
    turns = [{"role": "user", "content": question}]
    for name in calls:
        turns.append({"role": "assistant", "thought": "t", "tool_calls": [
            {"type": "function", "function": {"name": name, "arguments": {"image": "image/a.jpg"}}}]})
        turns.append({"role": "tool", "name": name, "content": {"type": "text", "content": "result"}})
    turns.append({"role": "assistant", "content": "final"})
    return turns


def _tool(name):
    return {"name": name, "description": f"{name} tool", "inputs": [], "outputs": []}


@pytest.fixture
def gta_dir(tmp_path):
    make_image(tmp_path / "image" / "a.jpg")
    make_image(tmp_path / "image" / "b.png", color=(0, 0, 255))
    data = {
        "0": {  # objective item: OCR then Calculator (python) then DrawBox
            "tools": [_tool("OCR"), _tool("Calculator"), _tool("DrawBox")],
            "files": [{"type": "image", "path": "image/a.jpg", "url": "https://example.invalid/a.jpg"}],
            "dialogs": _dialogs("How much do the two items cost?", ["OCR", "Calculator", "DrawBox", "OCR"]),
            "gt_answer": {"whitelist": [["12.5", "12.50"], [7]], "blacklist": None},
        },
        "1": {  # subjective
            "tools": [_tool("ImageDescription")],
            "files": [{"type": "image", "path": "image/b.png"}],
            "dialogs": _dialogs("Describe the picture.", ["ImageDescription"]),
            "gt_answer": ["A blue square."],
        },
        "2": {  # image generation, with a tool mmat has no equivalent for
            "tools": [_tool("TextToImage"), _tool("SpeechToText")],
            "files": [],
            "dialogs": _dialogs("Draw a cat.", ["SpeechToText", "TextToImage"]),
            "gt_answer": None,
        },
        "3": {"tools": [], "files": [{"type": "image", "path": "image/missing.jpg"}],
              "dialogs": _dialogs("Missing file?", []), "gt_answer": None},
        "4": {"tools": [], "files": [], "dialogs": [{"role": "assistant", "content": "no user"}], "gt_answer": None},
        "5": {"tools": [], "files": [], "dialogs": _dialogs("Bad gt", []), "gt_answer": {"whitelist": []}},
        "6": ["not", "an", "object"],
        "10": {"tools": [], "files": [], "dialogs": _dialogs("No gt field", [])},
        "11": {"tools": [], "files": [], "dialogs": _dialogs("Blacklisted", []),
               "gt_answer": {"whitelist": [["yes"]], "blacklist": [["no"]]}},
    }
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return tmp_path


def test_objective_item_fields(gta_dir):
    report = load_gta(gta_dir / "dataset.json")
    item = {i.key: i for i in report.items}["0"]
    assert item.question == "How much do the two items cost?"
    assert item.files == [(gta_dir / "image" / "a.jpg").resolve()] and item.files[0].is_file()
    assert item.file_names == ["a.jpg"]
    assert item.tools == ["ocr", "image_edit"]  # Calculator is the agent's own Python
    assert item.gold_tool_calls == ["ocr", "image_edit", "ocr"]  # order kept, python tools dropped
    assert item.answer_kind == "whitelist"
    assert item.gt == {"whitelist": [["12.5", "12.50"], ["7"]], "blacklist": None}  # numeric alias kept as text
    assert item.level is None and item.tool_gold_known


def test_subjective_and_image_generation_kinds(gta_dir):
    items = {i.key: i for i in load_gta(gta_dir / "dataset.json").items}
    assert items["1"].answer_kind == "subjective" and items["1"].gold_tool_calls == ["visualizer"]
    assert items["2"].answer_kind == "none" and items["2"].gt is None
    assert items["2"].tools == ["image_generator"]
    assert items["2"].gold_tool_calls == ["SpeechToText", "image_generator"]  # unknown kept: nothing can match it
    assert items["11"].gt["blacklist"] == [["no"]]


def test_malformed_items_are_skipped_with_reasons(gta_dir):
    report = load_gta(gta_dir / "dataset.json")
    assert [i.key for i in report.items] == ["0", "1", "2", "11"]  # numeric key order
    reasons = {s.key: s.reason for s in report.skipped}
    assert set(reasons) == {"3", "4", "5", "6", "10"}
    assert reasons["3"].startswith("file not found:") and "missing.jpg" in reasons["3"]
    assert reasons["4"] == "no user message in dialogs"
    assert reasons["5"] == "gt_answer.whitelist is empty"
    assert reasons["6"] == "item is a list, not an object"
    assert reasons["10"].startswith("no gt_answer field")


def test_unknown_tools_are_reported(gta_dir):
    report = load_gta(gta_dir / "dataset.json")
    assert report.unknown_tools == {"SpeechToText": ["2"]}
    assert "SpeechToText (1 items)" in report.summary()
    assert report.summary().startswith(f"{gta_dir / 'dataset.json'}: 4 items loaded, 5 skipped")


def test_data_dir_overrides_the_file_folder(gta_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "dataset.json").write_text((gta_dir / "dataset.json").read_text())
    assert load_gta(elsewhere / "dataset.json").items[0].key == "2"  # only the file-less items load
    report = load_gta(elsewhere / "dataset.json", data_dir=gta_dir)
    assert [i.key for i in report.items] == ["0", "1", "2", "11"]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"benchmark file .*nope.json does not exist"):
        load_gta(tmp_path / "nope.json")


def test_unparsable_file_is_a_config_error(tmp_path):
    bad = tmp_path / "dataset.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"dataset.json is not valid JSON"):
        load_gta(bad)


def test_wrong_top_level_is_a_config_error(tmp_path):
    bad = tmp_path / "dataset.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object keyed"):
        load_gta(bad)


def test_load_bench_dispatches_and_names_the_fix(gta_dir):
    from mmat.eval.loaders import load_bench

    assert [i.key for i in load_bench("gta", gta_dir / "dataset.json").items] == ["0", "1", "2", "11"]
    with pytest.raises(ConfigError, match="bench gta needs a benchmark file"):
        load_bench("gta")
    with pytest.raises(ConfigError, match="bench mmat reads tasks from the store"):
        load_bench("mmat")
    with pytest.raises(ConfigError, match="unknown bench 'mmlu': choose one of gta, gaia, agentx, mmat"):
        load_bench("mmlu")
