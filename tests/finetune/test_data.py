"""Conversation -> sample encoding: the assistant-only mask, image order, truncation and drop counts."""

from __future__ import annotations

import pytest

from mmat.errors import ConfigError
from mmat.finetune.data import IGNORE_INDEX, ChatCodec, conversation_to_row, encode_rows, pair_to_row

# The text each template puts after an assistant message's content, up to and including its end token.
END_OF_TURN = {"text": "<|im_end|>", "idefics3": "<end_of_utterance>", "llava": "<|im_end|>"}
# Text the template puts between the generation prompt and the content (SmolVLM: "Assistant:" + " ").
LEAD = {"text": "", "idefics3": " ", "llava": ""}


def _processing(path):
    from transformers import AutoProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(path) if path.name == "text" else AutoProcessor.from_pretrained(path)


@pytest.fixture(params=["text", "idefics3", "llava"])
def student(request):
    """(name, codec) for each tiny student."""
    return request.param, ChatCodec(_processing(request.getfixturevalue(request.param if request.param != "text" else "text_lm")))


def _supervised_runs(sample, codec) -> list[str]:
    """Decode each contiguous run of supervised label tokens."""
    runs, cur = [], []
    for tok, lab in zip(sample.input_ids, sample.labels):
        if lab != IGNORE_INDEX:
            assert lab == tok, "labels must equal the input ids where supervised"
            cur.append(lab)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [codec.tokenizer.decode(r) for r in runs]


def test_mask_supervises_exactly_the_assistant_turns(student, agent_conversation):
    name, codec = student
    samples, report = encode_rows([agent_conversation], codec, max_length=4096)
    assert report.n_samples == 1 and report.n_dropped == 0
    sample = samples[0]
    expected = [LEAD[name] + m["content"] + END_OF_TURN[name] for m in agent_conversation if m["role"] == "assistant"]
    assert _supervised_runs(sample, codec) == expected
    assert sample.n_assistant_turns == 2
    assert report.n_supervised_tokens == sample.n_supervised
    # nothing from the system prompt, the task or the observations carries loss
    supervised_text = "".join(_supervised_runs(sample, codec))
    for forbidden in ("You are an agent", "Task:", "Observation:", "[[12, 30"):
        assert forbidden not in supervised_text


def test_segment_encoding_matches_whole_text_tokenization(student, agent_conversation):
    """Segment-wise ids equal the processor's ids for the whole text: training sees what inference sees."""
    name, codec = student
    sample = encode_rows([agent_conversation], codec, max_length=4096)[0][0]
    if codec.is_vlm:
        whole = codec.processing(text=[sample.text], images=[sample.images], add_special_tokens=False)["input_ids"][0]
    else:
        whole = codec.tokenizer(sample.text, add_special_tokens=False)["input_ids"]
    assert list(whole) == sample.input_ids
    assert sample.text.endswith(END_OF_TURN[name])  # the sample ends on the last assistant end token


def test_vlm_rows_keep_image_order_and_placeholders(idefics3, agent_conversation):
    codec = ChatCodec(_processing(idefics3))
    row = conversation_to_row(agent_conversation, vlm=True)
    assert [img.size for img in row["images"]] == [(40, 30), (20, 50)]  # path first, then the data URL
    placeholders = [p for m in row["messages"] for p in m["content"] if p["type"] == "image"]
    assert len(placeholders) == 2
    assert row["messages"][1]["content"][0] == {"type": "text", "text": "Task: how many cats are in the picture?"}
    sample = encode_rows([row], codec, max_length=4096)[0][0]  # a ready TRL row encodes as-is
    image_tokens = sample.input_ids.count(codec.image_token_id)
    assert image_tokens == 2 * 4  # two images, four image tokens each in the tiny Idefics3


def test_text_student_sees_images_as_the_local_provider_renders_them(text_lm, agent_conversation):
    from mmat.local.messages import flatten_messages

    row = conversation_to_row(agent_conversation, vlm=False)
    assert row["messages"] == flatten_messages(agent_conversation).messages
    assert "[image: 40x30, RGB" in row["messages"][1]["content"]
    assert "[image: 20x50, RGB" in row["messages"][3]["content"]


def test_too_long_drop_turns_keeps_whole_turns_and_counts(student, agent_conversation):
    name, codec = student
    full = encode_rows([agent_conversation], codec, max_length=4096)[0][0]
    samples, report = encode_rows([agent_conversation], codec, max_length=len(full) - 1, overflow="drop_turns")
    assert report.n_samples == 1 and report.n_trimmed == 1 and report.turns_dropped == 1 and report.n_dropped == 0
    kept = samples[0]
    first_answer = next(m["content"] for m in agent_conversation if m["role"] == "assistant")
    assert _supervised_runs(kept, codec) == [LEAD[name] + first_answer + END_OF_TURN[name]]
    assert len(kept) < len(full) and kept.input_ids == full.input_ids[: len(kept)]


def test_too_long_drop_sample_drops_and_counts(student, agent_conversation):
    _, codec = student
    full = encode_rows([agent_conversation], codec, max_length=4096)[0][0]
    samples, report = encode_rows([agent_conversation, agent_conversation], codec, max_length=len(full) - 1,
                                  overflow="drop_sample")
    assert samples == [] and report.n_rows == 2 and report.n_dropped == 2 and report.reasons == {"too_long": 2}


def test_truncation_never_cuts_inside_an_assistant_turn(text_lm, agent_conversation):
    """For every max_length, each supervised run is a complete assistant turn (or the sample is dropped)."""
    codec = ChatCodec(_processing(text_lm))
    answers = [m["content"] + "<|im_end|>" for m in agent_conversation if m["role"] == "assistant"]
    full = encode_rows([agent_conversation], codec, max_length=4096)[0][0]
    for max_length in range(8, len(full) + 2, 3):
        samples, report = encode_rows([agent_conversation], codec, max_length=max_length)
        assert report.n_samples + report.n_dropped == 1
        if samples:
            runs = _supervised_runs(samples[0], codec)
            assert runs == answers[: len(runs)] and len(samples[0]) <= max_length
        else:
            assert report.reasons == {"too_long": 1}


def test_drop_reasons_are_counted(idefics3, agent_conversation):
    codec = ChatCodec(_processing(idefics3))
    no_answer = [m for m in agent_conversation if m["role"] != "assistant"]
    broken = [dict(m) for m in agent_conversation]
    broken[1] = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/nonexistent/cat.png"}}]}
    starts_with_answer = [{"role": "assistant", "content": "hello"}]
    samples, report = encode_rows([agent_conversation, no_answer, broken, starts_with_answer], codec, max_length=4096)
    assert len(samples) == 1
    assert report.n_rows == 4 and report.n_samples == 1 and report.n_dropped == 3
    assert report.reasons == {"no_assistant_turn": 1, "image_unreadable": 1, "starts_with_assistant": 1}
    assert "1/4 samples kept" in report.summary()


def test_bad_inputs_raise_config_errors(text_lm):
    codec = ChatCodec(_processing(text_lm))
    with pytest.raises(ConfigError, match="OpenAI chat format"):
        encode_rows(["not a conversation"], codec, max_length=512)
    with pytest.raises(ConfigError, match="too small"):
        encode_rows([], codec, max_length=4)


def test_pair_rows(agent_conversation):
    prompt = agent_conversation[:2]
    row = pair_to_row({"prompt": prompt, "chosen": "final_answer('2')", "rejected": "print(x)"}, vlm=True)
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "final_answer('2')"}]}]
    assert len(row["images"]) == 1 and row["prompt"][1]["content"][1] == {"type": "image"}
    text_row = pair_to_row({"prompt": prompt, "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
                           vlm=False)
    assert text_row["chosen"] == [{"role": "assistant", "content": "a"}] and "images" not in text_row


def test_end_of_turn_ids_follow_the_template(idefics3, text_lm):
    vlm = ChatCodec(_processing(idefics3))
    assert vlm.tokenizer.convert_tokens_to_ids("<end_of_utterance>") in vlm.end_of_turn_ids()
    txt = ChatCodec(_processing(text_lm))
    assert txt.end_of_turn_ids() == [txt.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_store_export_objects_are_accepted(text_lm, agent_conversation):
    """The store's Conversation / PreferenceRow (mmat.store.export) feed training directly."""
    from mmat.store.export import Conversation, PreferenceRow

    codec = ChatCodec(_processing(text_lm))
    samples, report = encode_rows([Conversation(messages=agent_conversation, meta={"traj_id": "t1"})], codec,
                                  max_length=4096)
    assert report.n_samples == 1 and samples[0].n_assistant_turns == 2
    row = pair_to_row(PreferenceRow(prompt=agent_conversation[:4], chosen="a", rejected="b"), vlm=False)
    assert row["chosen"] == [{"role": "assistant", "content": "a"}] and len(row["prompt"]) == 4
