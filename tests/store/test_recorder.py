"""LMCallRecorder: one lm_calls row per DSPy LM call -- module, tokens, cost, cache hits, errors, task ids.

The model is a tiny litellm CustomLLM registered here through litellm's real provider mechanism, so
the calls take DSPy's real path (adapter, cache, litellm engine, history, callbacks).
"""

import json
import threading

import dspy
import litellm
import pytest
from dspy.clients.cache import Cache
from litellm import CustomLLM, ModelResponse, Usage

from mmat.store import LMCallRecorder, recording_task

PROVIDER = "mmatstoretest"
MODEL = f"{PROVIDER}/echo"
SECRET = "sk-test-never-store-me-123"
PROMPT_TOKENS, COMPLETION_TOKENS = 7, 3
IN_COST, OUT_COST = 1e-6, 2e-6


class EchoLLM(CustomLLM):
    """Answers DSPy's chat format with the question reversed; raises when asked to."""

    def completion(self, model, messages, *args, **kwargs):
        question = messages[-1]["content"]
        if "boom" in question:
            raise RuntimeError("boom requested by the test")
        answer = question.split("[[ ## question ## ]]")[-1].split("\n")[1][::-1]
        return ModelResponse(
            model=model,
            choices=[{"message": {"role": "assistant", "content": f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"}}],
            usage=Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS, total_tokens=10),
        )


@pytest.fixture
def echo_lm(monkeypatch):
    entry = {"provider": PROVIDER, "custom_handler": EchoLLM()}
    litellm.custom_provider_map.append(entry)
    litellm.utils.custom_llm_setup()
    litellm.register_model({MODEL: {"input_cost_per_token": IN_COST, "output_cost_per_token": OUT_COST,
                                    "litellm_provider": PROVIDER, "mode": "chat"}})
    # A private in-memory cache: no files in ~/.dspy_cache, no hits left over from other tests.
    monkeypatch.setattr(dspy, "cache", Cache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None))
    yield dspy.LM(MODEL, num_retries=0, cache=True, api_key=SECRET)
    litellm.custom_provider_map.remove(entry)


class Solver(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.answer(question=question)


def recorded(store):
    store.writer.flush()
    return store.sql("SELECT * FROM lm_calls ORDER BY started_at")


def test_calls_cache_hits_module_and_task(store, echo_lm):
    recorder = LMCallRecorder(store, run_id="run1")
    solver = Solver()
    with dspy.context(lm=echo_lm, callbacks=[recorder]):
        with recording_task("task-A"):
            assert solver(question="abc").answer == "cba"
            assert solver(question="abc").answer == "cba"  # same input, cache on: served from the cache
        assert solver(question="xyz").answer == "zyx"
    first, second, third = recorded(store)

    assert first["run_id"] == "run1" and first["model"] == MODEL and first["module"] == "Solver"
    assert (first["cache_hit"], first["prompt_tokens"], first["completion_tokens"]) == (False, 7, 3)
    assert first["cost"] == pytest.approx(PROMPT_TOKENS * IN_COST + COMPLETION_TOKENS * OUT_COST)
    assert first["error"] is None and first["latency_ms"] > 0
    assert first["task_id"] == "task-A"
    messages = json.loads(first["messages"])
    assert [m["role"] for m in messages] == ["system", "user"] and "abc" in messages[-1]["content"]
    assert "cba" in json.loads(first["outputs"])[0]

    assert (second["cache_hit"], second["prompt_tokens"], second["completion_tokens"], second["cost"]) == (True, 0, 0, 0.0)
    assert second["task_id"] == "task-A" and second["module"] == "Solver"
    assert second["call_id"] != first["call_id"]

    assert third["cache_hit"] is False and third["task_id"] is None


def test_error_is_recorded(store, echo_lm):
    with dspy.context(lm=echo_lm, callbacks=[LMCallRecorder(store, run_id="run1")]):
        with pytest.raises(Exception, match="boom requested by the test"):
            Solver()(question="boom")
    rows = recorded(store)
    assert rows, "the failed call was not recorded"
    for row in rows:
        assert "boom requested by the test" in row["error"]
        assert row["cache_hit"] is False and row["outputs"] is None and row["module"] == "Solver"


def test_module_names(store, echo_lm):
    named = Solver()
    named._mmat_name = "solver.step1"
    with dspy.context(lm=echo_lm, callbacks=[LMCallRecorder(store, run_id=None)]):
        dspy.Predict("question -> answer")(question="bare")
        named(question="named")
    assert [r["module"] for r in recorded(store)] == ["Predict", "solver.step1"]


def test_no_api_key_anywhere(store, echo_lm):
    with dspy.context(lm=echo_lm, callbacks=[LMCallRecorder(store, run_id="r")]):
        Solver()(question="secret?")
    rows = recorded(store)
    assert len(rows) == 1
    assert SECRET not in json.dumps(rows, default=str)


def test_threads_keep_their_own_task_and_usage_tracking_still_works(store, echo_lm):
    recorder = LMCallRecorder(store, run_id="r")
    errors = []

    def work(task):
        try:
            with dspy.context(lm=echo_lm, callbacks=[recorder]), recording_task(task):
                Solver()(question=f"q-{task}")
        except Exception as e:  # collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = recorded(store)
    assert sorted(r["task_id"] for r in rows) == ["t0", "t1", "t2", "t3"]
    for r in rows:
        assert f"q-{r['task_id']}" in r["messages"]

    with dspy.context(lm=echo_lm, callbacks=[recorder]), dspy.track_usage() as usage:
        Solver()(question="tracked")
    assert usage.get_total_tokens()[MODEL]["prompt_tokens"] == PROMPT_TOKENS
