"""A served student sees, token for token, the prompt it was trained on (every chat template mmat supports).

For each tiny student (Llama-style text LM, Idefics3, LLaVA) and every assistant turn of an agent
conversation, two server-side prompts are built from the agent's messages up to that turn:
- vLLM's: the chat template rendered with a generation prompt, then the model's processor/tokenizer
  on the whole text (what an OpenAI-compatible server does with ``messages``);
- mmat's local engine's: ``mmat.local.generate.render_prompt`` (what `mmat serve --engine local` runs).
Both must equal the training sample's tokens before that turn, and the turn's first token must be
the first supervised label.
"""

from __future__ import annotations

import pytest

from mmat.finetune.data import IGNORE_INDEX, ChatCodec, conversation_to_row
from mmat.local.generate import render_prompt
from mmat.local.loader import LoadedModel


def _processing(model_dir, vlm: bool):
    from transformers import AutoProcessor, AutoTokenizer

    return AutoProcessor.from_pretrained(model_dir) if vlm else AutoTokenizer.from_pretrained(model_dir)


def _text_conversation():
    return [
        {"role": "system", "content": "You are an agent. Solve the task with Python code and tools."},
        {"role": "user", "content": "Task: what is 6 times 7? Tools: final_answer(answer)"},
        {"role": "assistant", "content": "Thought: multiply.\nCode:\n```py\nprint(6 * 7)\n```"},
        {"role": "user", "content": "Observation: 42"},
        {"role": "assistant", "content": "Thought: done.\nCode:\n```py\nfinal_answer(42)\n```"},
    ]


def _vlm_server_ids(codec: ChatCodec, messages, images) -> list[int]:
    row = conversation_to_row(messages, vlm=True)
    text = codec.processing.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
    enc = codec.processing(text=[text], images=[row["images"]] if row["images"] else None, add_special_tokens=False)
    return list(enc["input_ids"][0])


def _text_server_ids(codec: ChatCodec, messages) -> list[int]:
    text = codec.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return codec.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("student", ["text_lm", "idefics3", "llava"])
def test_served_prompt_equals_the_training_prefix(student, request, agent_conversation):
    model_dir = request.getfixturevalue(student)
    vlm = student != "text_lm"
    codec = ChatCodec(_processing(model_dir, vlm))
    conversation = agent_conversation if vlm else _text_conversation()
    sample, _ = codec.encode(conversation_to_row(conversation, vlm=vlm), max_length=1 << 20)
    loaded = LoadedModel(spec=None, model=None, tokenizer=codec.tokenizer, processor=codec.processing if vlm else None)

    turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    assert len(turns) == 2
    for i in turns:
        prefix = conversation[:i]
        served = _vlm_server_ids(codec, prefix, None) if vlm else _text_server_ids(codec, prefix)
        local = [int(t) for t in render_prompt(loaded, prefix)["input_ids"][0]]
        n = len(served)
        assert served == sample.input_ids[:n], f"{student}: server prompt differs from training before turn {i}"
        assert local == served, f"{student}: mmat's local engine renders another prompt than the chat template"
        assert sample.labels[n] != IGNORE_INDEX and sample.labels[n - 1] == IGNORE_INDEX
