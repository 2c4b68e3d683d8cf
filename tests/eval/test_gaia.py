"""The GAIA loader on a small metadata.jsonl written here."""

import json

import pytest

from mmat.errors import ConfigError
from mmat.eval.gaia import load_gaia
from .helpers import make_image


@pytest.fixture
def gaia_file(tmp_path):
    make_image(tmp_path / "chart.png")
    rows = [
        {"task_id": "t1", "Question": "What colour?", "Level": 1, "Final answer": "red", "file_name": "chart.png"},
        {"task_id": "t2", "Question": "How many?", "Level": "2", "Final answer": "17", "file_name": ""},
        {"task_id": "t3", "Question": "Hidden", "Level": 3, "Final answer": "?", "file_name": ""},
        {"task_id": "t4", "Question": "Lost file", "Level": 1, "Final answer": "x", "file_name": "gone.pdf"},
        {"task_id": "t5", "Question": "", "Level": 1, "Final answer": "x", "file_name": ""},
        {"Question": "no id", "Level": 1, "Final answer": "x", "file_name": ""},
        {"task_id": "t2", "Question": "dupe", "Level": 1, "Final answer": "x", "file_name": ""},
        {"task_id": "t6", "Question": "Numeric answer", "Level": 2, "Final answer": 3.5},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(5, "{broken json")
    lines.append("")
    path = tmp_path / "metadata.jsonl"
    path.write_text("\n".join(lines))
    return path


def test_items_and_fields(gaia_file):
    report = load_gaia(gaia_file)
    items = {i.key: i for i in report.items}
    assert list(items) == ["t1", "t2", "t3", "t6"]
    assert items["t1"].files == [(gaia_file.parent / "chart.png").resolve()]
    assert items["t1"].level == "1" and items["t2"].level == "2"
    assert items["t1"].answer_kind == "gaia" and items["t1"].gt == "red"
    assert items["t2"].files == [] and items["t2"].gt == "17"
    assert items["t3"].answer_kind == "none" and items["t3"].gt is None  # hidden test-split answer
    assert items["t6"].gt == "3.5"
    assert not items["t1"].tool_gold_known and items["t1"].gold_tool_calls == []


def test_malformed_rows_are_skipped_with_reasons(gaia_file):
    reasons = [(s.key, s.reason) for s in load_gaia(gaia_file).skipped]
    assert reasons[0][0] == "t4" and reasons[0][1].startswith("file not found:")
    assert ("t5", "no Question text") in reasons
    assert ("line 7", "no task_id") in reasons
    assert reasons[2][0] == "line 6" and reasons[2][1].startswith("not valid JSON")
    assert ("t2", "duplicate task_id") in reasons
    assert len(reasons) == 5


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"metadata.jsonl does not exist"):
        load_gaia(tmp_path / "metadata.jsonl")


def test_empty_file_is_a_config_error(tmp_path):
    path = tmp_path / "metadata.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match="holds no items"):
        load_gaia(path)
