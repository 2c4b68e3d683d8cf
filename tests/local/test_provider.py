"""The local provider end to end on a tiny random model: DSPy parse, bounds, usage, images, adapters."""

import asyncio
import base64
import io
import json
import logging
import threading
from typing import Literal

import dspy
import pytest
from PIL import Image
from pydantic import BaseModel
from transformers import AutoTokenizer

import mmat.local.provider as provider_module  # sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads
import litellm  # noqa: E402  (after mmat: offline price map)
from mmat.lm import adapter_for, build_lm
from mmat.local import IMAGE_DOWNGRADES_KEY, MAX_ITEMS_PARAM, MAX_STRING_PARAM, get_loaded, resolve_local

SHORT = {MAX_STRING_PARAM: 12, MAX_ITEMS_PARAM: 3}


class Spec(BaseModel):
    query: str
    tools: list[str]
    kind: Literal["image", "document"]


class MakeSpec(dspy.Signature):
    """Write a task for a tool-using assistant."""

    topic: str = dspy.InputField()
    spec: Spec = dspy.OutputField()
    count: int = dspy.OutputField()


def _image_message() -> list[dict]:
    buf = io.BytesIO()
    Image.new("RGB", (3, 3), (0, 0, 255)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]


def test_random_model_under_the_grammar_still_parses_a_typed_signature(tiny_lm_dir, mmat_settings):
    lm = build_lm(f"local/{tiny_lm_dir}", settings=mmat_settings, max_tokens=600, **SHORT)
    assert lm.supports_response_schema  # so JSONAdapter sends the schema to the provider
    with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
        for i in range(3):
            pred = dspy.Predict(MakeSpec)(topic=f"topic {i}")
            assert isinstance(pred.spec, Spec) and isinstance(pred.count, int)
            assert len(pred.spec.query) <= 12 and len(pred.spec.tools) <= 3
            assert all(len(t) <= 12 for t in pred.spec.tools)
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 100 and usage["completion_tokens"] > 5


def test_plain_text_without_response_format_and_usage_counts(tiny_lm_dir, mmat_settings):
    resp = litellm.completion(
        model=f"local/{tiny_lm_dir}", messages=[{"role": "user", "content": "hi"}], max_tokens=7, n=2,
        mmat_home=str(mmat_settings.home),
    )
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert len(resp.choices) == 2
    assert resp.usage.prompt_tokens == 2 * len(tok(prompt, add_special_tokens=False)["input_ids"])  # usage sums both samples
    assert 2 <= resp.usage.completion_tokens <= 14
    assert all(c.finish_reason in ("stop", "length") for c in resp.choices)


def test_images_are_downgraded_counted_and_warned_once(tiny_lm_dir, mmat_settings, caplog):
    provider_module._warned_downgrade.clear()
    with caplog.at_level(logging.WARNING, logger="mmat.local.provider"):
        for _ in range(2):
            resp = litellm.completion(model=f"local/{tiny_lm_dir}", messages=_image_message(), max_tokens=3, mmat_home=str(mmat_settings.home))
            assert resp._hidden_params[IMAGE_DOWNGRADES_KEY] == 1
    warnings = [r for r in caplog.records if "reads text only" in r.getMessage()]
    assert len(warnings) == 1
    resp = litellm.completion(model=f"local/{tiny_lm_dir}", messages=[{"role": "user", "content": "x"}], max_tokens=2, mmat_home=str(mmat_settings.home))
    assert resp._hidden_params[IMAGE_DOWNGRADES_KEY] == 0


def test_async_completion_runs_the_same_path(tiny_lm_dir, mmat_settings):
    rf = {"type": "json_schema", "json_schema": {"name": "X", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}}}
    resp = asyncio.run(
        litellm.acompletion(model=f"local/{tiny_lm_dir}", messages=[{"role": "user", "content": "n?"}], response_format=rf, max_tokens=40, mmat_home=str(mmat_settings.home))
    )
    assert isinstance(json.loads(resp.choices[0].message.content)["a"], int)


def test_an_adapter_dir_is_served_like_a_model(tiny_lm_dir, tiny_adapter_dir, mmat_settings):
    lm = build_lm(f"local/{tiny_adapter_dir}", settings=mmat_settings, max_tokens=200, **SHORT)
    with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
        assert isinstance(dspy.Predict(MakeSpec)(topic="t").spec, Spec)
    adapter = get_loaded(resolve_local(str(tiny_adapter_dir), mmat_settings))
    base = get_loaded(resolve_local(str(tiny_lm_dir), mmat_settings))
    assert adapter.model is not base.model  # the shared base is never wrapped by peft


def test_concurrent_first_use_loads_once(tiny_lm_dir, mmat_settings):
    spec = resolve_local(str(tiny_lm_dir), mmat_settings)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(get_loaded(spec))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in seen}) == 1


def test_a_vision_model_dir_sees_real_images_not_descriptions(mmat_settings, tmp_path):
    tiny = pytest.importorskip("mmat.testing.tiny_models")
    vlm = tiny.build_tiny_idefics3(tmp_path / "idefics3")
    rf = {"type": "json_schema", "json_schema": {"name": "X", "schema": {
        "type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"], "additionalProperties": False}}}
    common = dict(model=f"local/{vlm}", max_tokens=40, response_format=rf, mmat_home=str(mmat_settings.home), mmat_max_string_length=8)
    with_image = litellm.completion(messages=_image_message(), **common)
    text_only = litellm.completion(messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}], **common)
    assert with_image._hidden_params[IMAGE_DOWNGRADES_KEY] == 0
    assert len(json.loads(with_image.choices[0].message.content)["b"]) <= 8
    assert with_image.usage.prompt_tokens >= text_only.usage.prompt_tokens + 4  # the image's tokens reached the model


def test_a_constrained_judge_scores_every_candidate(tiny_lm_dir, mmat_settings):
    # a random model under the per-candidate schema cannot skip a candidate, whatever it writes
    from mmat.programs import AgentStep, StepJudge

    lm = build_lm(f"local/{tiny_lm_dir}", settings=mmat_settings, max_tokens=600, **SHORT)
    candidates = [AgentStep(idx=0, thought="t", code=f"x = {i}", observation="ran") for i in range(4)]
    with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
        for i in range(3):
            ranking = StepJudge()(f"Make 42 ({i}).", [], [], candidates)
            assert len(ranking.scores) == len(ranking.reasons) == 4 and sorted(ranking.order) == [0, 1, 2, 3]
            assert all(0.0 <= s <= 1.0 for s in ranking.scores)


def test_the_action_grammar_holds_a_random_controller_to_one_tool_call(tiny_lm_dir, mmat_settings, tmp_path):
    import re

    from mmat.programs import CodeAgent, GeneratedFile
    from mmat.programs.action_grammar import action_pattern

    image = tmp_path / "sky.png"
    Image.new("RGB", (8, 8), (0, 0, 90)).save(image)
    files = [GeneratedFile(name="sky.png", path=image, modality="image", mime="image/png", source="user")]
    lm = build_lm(f"local/{tiny_lm_dir}", settings=mmat_settings, max_tokens=400, **SHORT)
    pattern = action_pattern(["ocr", "visualizer"], files)
    with dspy.context(lm=lm, adapter=adapter_for(lm.model)):
        assert not CodeAgent(["ocr"], settings=mmat_settings).uses_action_grammar()  # auto: the embedded teacher only
        agent = CodeAgent(["ocr", "visualizer"], settings=mmat_settings.model_copy(update={"agent_action_grammar": "on"}))
        for i in range(3):
            _, code = agent.propose(f"What is in the sky ({i})?", files, [], tools=["ocr", "visualizer"], multimodal=False)
            assert re.fullmatch(pattern, code), code
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):  # no schema is sent, so there is nothing to constrain
        assert not agent.uses_action_grammar()
    # DSPy's fallback request (a bare JSON object, no fields) still gets an answer rather than an error
    from mmat.local import FIELD_PATTERNS_PARAM

    resp = litellm.completion(model=f"local/{tiny_lm_dir}", messages=[{"role": "user", "content": "hi"}], max_tokens=20,
                              response_format={"type": "json_object"}, mmat_home=str(mmat_settings.home),
                              **{FIELD_PATTERNS_PARAM: {"code": pattern}})
    assert resp.choices[0].message.content.startswith("{")
