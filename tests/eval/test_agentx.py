"""Agent-X in both formats: list-typed user turns, image/ -> files/, a mislabelled PNG, an mp4 made with
OpenCV (2 s: one frame at 0 s), tool-name mapping, the full tool set offered, generative ids."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from mmat.errors import ConfigError
from mmat.eval.agentx import AGENTX_TO_GTA, agentx_format, load_agentx, read_generative_ids
from mmat.eval.media import sniff_image, video_frames
from mmat.eval.toolmap import GTA_TOOL_MAP


def write_mp4(path, seconds=2, fps=10, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(seconds * fps):
        frame = np.full((size[1], size[0], 3), (i * 10) % 255, dtype=np.uint8)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def agentx_dir(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    Image.new("RGB", (40, 30), "red").save(files / "AgentX_1.jpg", format="JPEG")
    Image.new("RGB", (40, 30), "blue").save(files / "AgentX_2.jpg", format="PNG")  # PNG bytes, .jpg name
    Image.new("RGB", (40, 30), "green").save(files / "AgentX_3.png", format="PNG")
    write_mp4(files / "AgentX_4.mp4")
    (files / "AgentX_5.mp4").write_bytes(b"not a video at all")
    return tmp_path


def _data_entry(file_path, steps, *, query="How many cars?", query_type="objective", value="3"):
    return [{
        "file_path": file_path, "query": query, "query_type": query_type,
        "tool_metadata": {"ObjectCounter": {"name": "ObjectCounter", "description": "count", "inputs": [], "outputs": []}},
        "reasoning_steps": steps,
        "final_answer": {"value": value, "justification": "three cars are visible"},
    }]


def test_data_json_items_reference_steps_tools_and_media(agentx_dir):
    steps = [{"step": 1, "task": "count cars", "tool": "ObjectCounter", "input": {"image": "AgentX_1.jpg", "object": "car"},
              "output": "3", "thought": "count them"}]
    nested = [[{"step": 1, "task": "describe", "tool": "SceneDescriber", "input": "AgentX_4.mp4", "output": "a road", "thought": "look"}],
              {"step": 2, "task": "search", "tool": "WebSearch", "input": "road", "output": "...", "thought": "find"}]
    data = {
        "0": _data_entry("AgentX_1.jpg", steps),
        "1": _data_entry("AgentX_2.jpg, AgentX_3.png", steps, query_type="subjective", value="a calm scene"),
        "2": _data_entry("AgentX_4.mp4", nested),
        "3": _data_entry("AgentX_5.mp4", steps),                       # cannot be decoded
        "4": _data_entry("missing.jpg", steps),                         # not there
        "5": [{"query": "no file"}],                                    # malformed
        "6": _data_entry("AgentX_1.jpg", [{"step": 1, "tool": "Teleporter", "input": {}, "output": "", "thought": ""}]),
    }
    path = agentx_dir / "data.json"
    path.write_text(json.dumps(data))
    report = load_agentx(path, media_dir=agentx_dir / "media", generative_ids={"1"})
    items = {i.key: i for i in report.items}
    skipped = {s.key: s.reason for s in report.skipped}
    assert set(items) == {"0", "1", "2", "6"} and set(skipped) == {"3", "4", "5"}
    assert "AgentX_5.mp4" in skipped["3"] and "OpenCV" in skipped["3"]
    assert "file not found" in skipped["4"] and "query_type None" in skipped["5"]
    first = items["0"]
    assert first.tools == [] and first.answer_kind == "judged" and first.query_type == "objective"
    assert first.gold_tool_calls == ["visualizer"]  # ObjectCounter -> CountGivenObject -> mmat's visualizer
    assert [s.tool for s in first.reference_steps] == ["CountGivenObject"] and first.reference_steps[0].output == "3"
    assert first.reference_answer.startswith("3") and "three cars" in first.reference_answer
    assert first.tool_metadata[0]["name"] == "ObjectCounter"  # kept for the judge, never offered to the agent
    two = items["1"]
    assert two.generative and not first.generative
    assert [p.suffix for p in two.files] == [".png", ".png"] and two.file_names[0] == "AgentX_2.png"
    assert any("AgentX_2.jpg holds PNG bytes" in n for n in two.media_notes)
    assert (agentx_dir / "files" / "AgentX_2.jpg").read_bytes()[:4] == b"\x89PNG"  # the original is untouched
    video = items["2"]
    assert len(video.files) == 1 and video.files[0].suffix == ".jpg"  # 2 s long: only the 0 s frame exists
    assert any("AgentX_4.mp4" in n and "1 frame(s) at 0 s" in n for n in video.media_notes)
    assert [s.tool for s in video.reference_steps] == ["ImageDescription", "GoogleSearch"]  # nested steps flattened
    assert report.unknown_tools == {"Teleporter": ["6"]}


def test_dataset_json_list_turns_image_paths_in_files_and_full_tool_set(agentx_dir):
    item = {
        "tools": [{"name": "OCR", "description": "read", "inputs": [], "outputs": []}],
        "files": [],
        "dialogs": [
            {"role": "user", "content": [{"type": "text", "text": "What colour is the car?"},
                                         {"type": "image", "image": "image/AgentX_2.jpg"}]},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "ImageDescription", "arguments": {"image": "image/AgentX_2.jpg"}}}]},
            {"role": "tool", "name": "ImageDescription", "content": "a blue square"},
            {"role": "assistant", "content": "blue"},
        ],
        "gt_answer": {"whitelist": [["blue"]], "blacklist": None},
    }
    generated = {**item, "dialogs": [{"role": "user", "content": [{"type": "text", "text": "Draw a cat."}]},
                                      {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "TextToImage", "arguments": {"keywords": "a cat"}}}]},
                                      {"role": "tool", "name": "TextToImage", "content": "cat.png"}], "gt_answer": None}
    video = {**item, "dialogs": [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                                              {"type": "image", "image": "image/AgentX_4.mp4"}]}], "gt_answer": ["cars pass"]}
    path = agentx_dir / "dataset.json"
    path.write_text(json.dumps({"0": item, "1": generated, "2": video}))
    assert agentx_format(json.loads(path.read_text())) == "dataset"
    report = load_agentx(path, media_dir=agentx_dir / "media")
    items = {i.key: i for i in report.items}
    assert report.skipped == []
    first = items["0"]
    assert first.question == "What colour is the car?" and first.tools == []  # the full tool set, not GTA's list
    assert first.files[0].suffix == ".png" and first.gold_tool_calls == ["visualizer"]
    assert first.reference_steps[0].output == "a blue square" and first.reference_answer == "blue"
    assert items["1"].generative and not first.generative  # null gt_answer = image answer
    assert items["2"].files[0].name.startswith("AgentX_4_frame1_0s")
    with_ids = load_agentx(path, media_dir=agentx_dir / "media", generative_ids={"0"})
    assert [i.key for i in with_ids.items if i.generative] == ["0"]


def test_every_agentx_tool_maps_to_a_gta_tool_mmat_knows():
    assert set(AGENTX_TO_GTA.values()) <= set(GTA_TOOL_MAP)
    assert len(AGENTX_TO_GTA) == 14


def test_generative_ids_files(tmp_path):
    (tmp_path / "ids.json").write_text('["3", 7]')
    (tmp_path / "ids.txt").write_text("3\n# comment\n7\n\n")
    assert read_generative_ids(tmp_path / "ids.json") == {"3", "7"} == read_generative_ids(tmp_path / "ids.txt")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    assert read_generative_ids(tmp_path / "bad.json") == {"a"}
    (tmp_path / "one.txt").write_text("5\n")
    assert read_generative_ids(tmp_path / "one.txt") == {"5"}
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_generative_ids(tmp_path / "broken.json")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no ids"):
        read_generative_ids(tmp_path / "empty.txt")


def test_sniffing_and_frames_at_configured_times(agentx_dir, tmp_path):
    assert sniff_image(agentx_dir / "files" / "AgentX_2.jpg") == ".png"
    assert sniff_image(agentx_dir / "files" / "AgentX_1.jpg") == ".jpg"
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg", format="WEBP")
    assert sniff_image(tmp_path / "x.jpg") == ".webp"
    long_video = write_mp4(tmp_path / "long.mp4", seconds=12, fps=5)
    frames, note = video_frames(long_video, tmp_path / "media", (0.0, 10.0, 20.0))
    assert len(frames) == 2 and "at 0/10 s" in note and all(cv2.imread(str(f)) is not None for f in frames)
