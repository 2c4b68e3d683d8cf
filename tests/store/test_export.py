"""Exports round-trip: HF loads with datasets, LLaMA-Factory and ms-swift files follow their documented keys."""

import json

import pytest
from PIL import Image

from mmat.errors import ConfigError
from mmat.store.export import (
    IMAGE_TOKEN,
    Conversation,
    PreferenceRow,
    export_conversations,
    export_preferences,
    flatten_images,
)


@pytest.fixture
def conversations(tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (8, 6), "red").save(red)
    Image.new("RGB", (5, 7), "blue").save(blue)
    msgs = [
        {"role": "system", "content": "You are an agent. Tools: ocr(image_path)."},
        {"role": "user", "content": [{"type": "text", "text": "Which image is red?"},
                                      {"type": "image_url", "image_url": {"url": str(red)}},
                                      {"type": "image_url", "image_url": {"url": str(blue)}}]},
        {"role": "assistant", "content": "Thought: look\nCode:\nprint(ocr('red.png'))"},
        {"role": "user", "content": "Observation: RED"},
        {"role": "assistant", "content": "Thought: done\nCode:\nfinal_answer('the first')"},
    ]
    return [Conversation(messages=msgs, meta={"traj_id": "t1"}, tools=[{"name": "ocr"}])], (red, blue)


def test_flatten_keeps_image_order_and_placeholders(conversations):
    convs, (red, blue) = conversations
    flat, images = flatten_images(convs[0].messages)
    assert images == [str(red), str(blue)]
    assert flat[1]["content"] == f"Which image is red?\n{IMAGE_TOKEN}\n{IMAGE_TOKEN}"
    assert [m["role"] for m in flat] == ["system", "user", "assistant", "user", "assistant"]


def test_hf_export_loads_with_datasets(conversations, tmp_path):
    import datasets

    convs, _ = conversations
    path = export_conversations(convs, "hf", tmp_path / "out")
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert isinstance(ds.features["images"].feature, datasets.Image)
    row = ds[0]
    assert [im.size for im in row["images"]] == [(8, 6), (5, 7)]
    assert row["images"][0].getpixel((0, 0)) == (255, 0, 0)
    assert row["messages"][4]["content"].endswith("final_answer('the first')")
    assert json.loads(row["meta"]) == {"traj_id": "t1"}


def _check_sharegpt(row, info_entry):
    cols, tags = info_entry["columns"], info_entry["tags"]
    turns = row[cols["messages"]]
    # LLaMA-Factory: user/observation at odd positions, assistant at even ones, system separate.
    for i, turn in enumerate(turns):
        expected = (tags["user_tag"], tags["observation_tag"]) if i % 2 == 0 else (tags["assistant_tag"],)
        assert turn[tags["role_tag"]] in expected
    text = "".join(t[tags["content_tag"]] for t in turns)
    assert text.count(IMAGE_TOKEN) == len(row[cols["images"]])


def test_llamafactory_sft_follows_dataset_info(conversations, tmp_path):
    convs, (red, _) = conversations
    path = export_conversations(convs, "llamafactory", tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())["mmat_sft"]
    assert info["file_name"] == path.name and info["formatting"] == "sharegpt"
    rows = json.loads(path.read_text())
    assert rows[0]["system"].startswith("You are an agent")
    assert rows[0]["images"][0] == str(red)
    _check_sharegpt(rows[0], info)
    assert len(rows[0]["messages"]) % 2 == 0  # ends on an assistant turn


def test_llamafactory_dpo_is_ranking_data(conversations, tmp_path):
    convs, _ = conversations
    prompt = convs[0].messages[:4]
    path = export_preferences([PreferenceRow(prompt, chosen="final_answer('the first')", rejected="1/0")], "llamafactory", tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())["mmat_dpo"]
    assert info["ranking"] is True
    row = json.loads(path.read_text())[0]
    _check_sharegpt(row, info)
    assert len(row["messages"]) % 2 == 1  # ends on the prompt's user turn
    assert row["chosen"] == {"role": "assistant", "content": "final_answer('the first')"}
    assert row["rejected"]["content"] == "1/0"


def test_swift_sft_and_dpo(conversations, tmp_path):
    convs, _ = conversations
    sft = [json.loads(l) for l in export_conversations(convs, "swift", tmp_path).read_text().splitlines()]
    assert set(sft[0]) == {"messages", "images", "tools"}
    assert json.loads(sft[0]["tools"]) == [{"name": "ocr"}]
    dpo_path = export_preferences([PreferenceRow(convs[0].messages[:4], "good", "bad")], "swift", tmp_path)
    dpo = json.loads(dpo_path.read_text().splitlines()[0])
    assert dpo["messages"][-1] == {"role": "assistant", "content": "good"}
    assert dpo["rejected_response"] == "bad"
    assert "".join(m["content"] for m in dpo["messages"]).count(IMAGE_TOKEN) == len(dpo["images"]) == 2


def test_openai_export_inlines_images(conversations, tmp_path):
    convs, _ = conversations
    row = json.loads(export_conversations(convs, "openai", tmp_path).read_text())
    url = row["messages"][1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")


def test_unknown_format_names_the_choices(conversations, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'csv': choose one of parquet, hf, llamafactory, swift, openai"):
        export_conversations(conversations[0], "csv", tmp_path)
