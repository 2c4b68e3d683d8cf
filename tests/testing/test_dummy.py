"""DummyLM answers through the real litellm provider path, in the format the DSPy adapter asked for."""

import asyncio
import threading
from typing import Literal

import dspy
import pytest
from pydantic import BaseModel

from mmat.lm import build_lm, model_error
from mmat.testing import DummyExhaustedError, DummyLM, get_dummy


class Spec(BaseModel):
    query: str
    tools: list[str]
    kind: Literal["image", "document"]


class MakeSpec(dspy.Signature):
    """Write a task."""

    topic: str = dspy.InputField()
    spec: Spec = dspy.OutputField()
    count: int = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


SPEC = Spec(query="How many cats?", tools=["objectlocation"], kind="image")


def test_chat_adapter_gets_field_blocks_and_parses_typed_outputs(mmat_home):
    dm = DummyLM([{"spec": SPEC, "count": 2, "tags": ["a", "b"]}], name="chat")
    with dspy.context(lm=build_lm("dummy/chat"), adapter=dspy.ChatAdapter()):
        pred = dspy.Predict(MakeSpec)(topic="cats")
    assert pred.spec.model_dump() == SPEC.model_dump() and pred.count == 2 and pred.tags == ["a", "b"]
    call = dm.calls[0]
    assert call.format == "chat" and call.output_fields == ["spec", "count", "tags"]
    assert call.text.startswith("[[ ## spec ## ]]\n{") and call.text.endswith("[[ ## completed ## ]]")


def test_json_adapter_gets_a_schema_and_json(mmat_home):
    dm = DummyLM([{"spec": SPEC.model_dump(), "count": 3, "tags": []}], name="json")
    with dspy.context(lm=build_lm("dummy/json"), adapter=dspy.JSONAdapter()):
        pred = dspy.Predict(MakeSpec)(topic="cats")
    assert pred.spec.model_dump() == SPEC.model_dump() and pred.count == 3
    call = dm.calls[0]
    assert call.format == "json" and call.response_format["type"] == "json_schema"
    assert call.output_fields == ["spec", "count", "tags"]


def test_json_adapter_without_schema_support_is_detected_from_the_prompt(mmat_home):
    dm = DummyLM([{"spec": SPEC, "count": 1, "tags": ["x"]}], name="plainjson", supports_response_schema=False)
    with dspy.context(lm=build_lm("dummy/plainjson"), adapter=dspy.JSONAdapter()):
        assert dspy.Predict(MakeSpec)(topic="cats").tags == ["x"]
    assert dm.calls[0].format == "json" and dm.calls[0].response_format == {"type": "json_object"}


def test_exhausted_script_raises_a_clear_error_and_cycle_repeats(mmat_home):
    DummyLM([{"answer": "one"}], name="short")
    lm = build_lm("dummy/short", cache=False)
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="q").answer == "one"
        with pytest.raises(Exception) as e:
            dspy.Predict("question -> answer")(question="q")
    err = model_error(e.value)
    assert isinstance(err, DummyExhaustedError)
    assert str(err) == (
        "DummyLM 'short' ran out of scripted responses after 1 calls: add responses, pass cycle=True, "
        "or check why the program made more LM calls"
    )
    DummyLM([{"answer": "a"}, {"answer": "b"}], name="cyc", cycle=True)
    with dspy.context(lm=build_lm("dummy/cyc", cache=False)):
        answers = [dspy.Predict("question -> answer")(question="q").answer for _ in range(5)]
    assert answers == ["a", "b", "a", "b", "a"]


def test_callables_get_messages_and_optionally_the_output_fields(mmat_home):
    DummyLM(lambda messages: {"answer": messages[-1]["content"].split("\n")[1]}, name="echo")
    seen = []

    def two_args(messages, fields):
        seen.append(fields)
        return {f: "x" for f in fields}

    DummyLM(two_args, name="fields")
    with dspy.context(lm=build_lm("dummy/echo")):
        assert dspy.Predict("question -> answer")(question="ping").answer == "ping"
    with dspy.context(lm=build_lm("dummy/fields")):
        pred = dspy.Predict("question -> reasoning, answer")(question="q")
    assert seen == [["reasoning", "answer"]] and pred.answer == "x"


def test_named_dummies_coexist_and_usage_is_reported(mmat_home):
    DummyLM([{"answer": "from teacher"}], name="teacher")
    DummyLM([{"verdict": "ok"}], name="verifier")
    teacher, verifier = build_lm("dummy/teacher"), build_lm("dummy/verifier")
    with dspy.context(lm=verifier):
        assert dspy.Predict("answer -> verdict")(answer="a").verdict == "ok"
    with dspy.context(lm=teacher):
        assert dspy.Predict("question -> answer")(question="q").answer == "from teacher"
    usage = teacher.history[-1]["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] == len("[[ ## answer ## ]]\nfrom teacher\n\n[[ ## completed ## ]]".split())


def test_dspy_cache_answers_a_repeated_call_without_consuming_the_script(mmat_home):
    dm = DummyLM([{"answer": "first"}, {"answer": "second"}], name="cached")
    with dspy.context(lm=build_lm("dummy/cached")):
        answers = [dspy.Predict("question -> answer")(question="same").answer for _ in range(2)]
        fresh = dspy.Predict("question -> answer")(question="same", config={"rollout_id": 1}).answer
    assert answers == ["first", "first"] and fresh == "second"
    assert len(dm.calls) == 2 and dm.remaining == 0


def test_parallel_calls_each_consume_exactly_one_answer(mmat_home):
    dm = DummyLM([{"answer": str(i)} for i in range(16)], name="par", latency_s=0.01)
    lm = build_lm("dummy/par", cache=False)
    results: list[str] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        with dspy.context(lm=lm):
            answer = dspy.Predict("question -> answer")(question=f"q{i}").answer
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == [str(i) for i in range(16)] and len(dm.calls) == 16


def test_async_path(mmat_home):
    DummyLM([{"answer": "async"}], name="aio", latency_s=0.01)
    lm = build_lm("dummy/aio", cache=False)

    async def run():
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question="q")

    assert asyncio.run(run()).answer == "async"


def test_bad_construction_and_unknown_names(mmat_home):
    with pytest.raises(ValueError, match="at least one"):
        DummyLM([], name="empty")
    with pytest.raises(TypeError, match="dicts of output-field values"):
        DummyLM(["not a dict"], name="bad")
    with pytest.raises(ValueError, match="without '/'"):
        DummyLM([{"a": 1}], name="a/b")
    with pytest.raises(Exception, match=r"no DummyLM named 'nobody': create mmat.testing.DummyLM\(responses, name='nobody'\)"):
        get_dummy("nobody")


def test_constructing_a_dummy_touches_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMAT_HOME", raising=False)
    DummyLM([{"answer": "x"}], name="nofiles")
    assert list(tmp_path.iterdir()) == []


def test_a_renamed_script_can_change_schema_support(mmat_home):
    DummyLM([{"answer": "x"}], name="flip", supports_response_schema=True)
    assert build_lm("dummy/flip").supports_response_schema
    DummyLM([{"answer": "x"}], name="flip", supports_response_schema=False)
    assert not build_lm("dummy/flip").supports_response_schema
