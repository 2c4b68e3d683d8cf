"""Preflight against a loopback fake server, structured-output modes, one-line failures, key handling."""

import json
import re

import dspy
import pytest

from mmat.config import load_settings
from mmat.errors import ConfigError, ModelUnavailableError
from mmat.lm import adapter_for, build_lm, check_model, structured_mode
from mmat.preflight import (
    PLACEHOLDER_KEY, clear_cache, describe_failure, is_private_base, role_fix, server_message, validate_api_base,
)
from mmat.structured import StructuredAdapter, adjust_schema, forget
from mmat.testing.fault_server import Fault, FaultServer, always

CANARY = "sk-canary-4f1e9d0c-do-not-leak"


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    for var in ("OPENAI_API_KEY", "HOSTED_VLLM_API_KEY", "OPENAI_API_BASE", "HOSTED_VLLM_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    clear_cache()
    forget()
    yield
    clear_cache()
    forget()


def answer(messages, fields):
    return {"answer": "5"}


@pytest.fixture
def server():
    with FaultServer(served=["SmolLM2-135M-Instruct"], responders={"SmolLM2-135M-Instruct": answer}) as s:
        yield s


def test_urls_are_validated_and_private_hosts_recognised():
    assert validate_api_base(" http://127.0.0.1:8000/v1 ") == "http://127.0.0.1:8000/v1"
    for bad in ("not a url", "127.0.0.1:8000", "ftp://x/v1", "http://", "http://h:99999/v1"):
        with pytest.raises(ConfigError, match="--api-base"):
            validate_api_base(bad)
    assert all(is_private_base(u) for u in ("http://127.0.0.1:1/v1", "http://[::1]:8/v1", "http://localhost:8000",
                                            "http://10.1.2.3/v1", "http://192.168.0.9:80", "http://vllm:8000/v1"))
    assert not any(is_private_base(u) for u in ("https://api.openai.com/v1", "http://8.8.8.8/v1", None))


def test_server_message_reads_openai_vllm_and_fastapi_bodies():
    assert server_message('{"error": {"message": "model  x\\n not found"}}') == "model x not found"
    assert server_message('{"object": "error", "message": "pinned to A"}') == "pinned to A"
    assert server_message('{"detail": "Not Found"}') == "Not Found"
    assert server_message(b"<html>oops</html>") == "<html>oops</html>"


def test_role_fix_names_the_flag_the_command_has():
    assert role_fix("controller", "mmat eval --bench x") == "pass --controller another model"
    assert role_fix("teacher", "mmat eval") == "set MMAT_TEACHER (or teacher in mmat.toml) to another model"
    assert role_fix("judge", "prefs") == "pass --judge another model"
    assert role_fix("verifier", "mmat synth") == "pass --verifier another model"


def test_wrong_model_id_lists_what_the_server_serves(mmat_home, server):
    settings = load_settings(api_base=server.api_base, controller="hosted_vllm/smollm2")
    with pytest.raises(ModelUnavailableError) as e:
        check_model("hosted_vllm/smollm2", settings, command="mmat eval")
    assert str(e.value) == (
        f"controller model 'hosted_vllm/smollm2' at {server.api_base}: the server serves 'SmolLM2-135M-Instruct', "
        "not 'smollm2': pass --controller hosted_vllm/SmolLM2-135M-Instruct"
    )
    assert not any(r["method"] == "POST" for r in server.requests)  # caught before any chat call


def test_missing_v1_is_named_and_the_listing_is_fetched_once(mmat_home, server):
    settings = load_settings(api_base=server.root)
    with pytest.raises(ModelUnavailableError, match=re.escape(f"HTTP 404: Not Found: add /v1 to --api-base ({server.api_base})")):
        check_model("hosted_vllm/SmolLM2-135M-Instruct", settings)
    good = load_settings(api_base=server.api_base)
    for _ in range(3):
        check_model("hosted_vllm/SmolLM2-135M-Instruct", good)
    listings = [r for r in server.requests if r["method"] == "GET" and r["path"] == "/v1/models"]
    assert len(listings) == 1  # fetched for the /v1 suggestion, then served from the cache


def test_loopback_openai_model_needs_no_key_and_gets_a_placeholder(mmat_home, server):
    settings = load_settings(api_base=server.api_base, structured_output="off")
    lm = build_lm("openai/SmolLM2-135M-Instruct", settings=settings)
    assert lm.kwargs["api_key"] == PLACEHOLDER_KEY and lm.kwargs["timeout"] == settings.request_timeout_s
    check_model("openai/SmolLM2-135M-Instruct", settings)
    with pytest.raises(ModelUnavailableError, match="missing API key"):
        build_lm("openai/gpt-4o-mini", settings=load_settings(api_base="https://api.example.com/v1"))


def test_a_set_key_is_sent_but_never_shown(mmat_home, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    settings = load_settings(api_base=server.api_base, structured_output="off")
    server.set_plan(always(Fault.status_code(401, "invalid api key")))
    lm = build_lm("openai/SmolLM2-135M-Instruct", settings=settings, num_retries=0, cache=False)
    with pytest.raises(Exception) as e, dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="hi")
    failure = describe_failure(e.value, settings, "synth")
    assert failure.fatal and failure.code == "auth" and CANARY not in failure.message
    assert any(CANARY in r["headers"].get("Authorization", "") for r in server.requests)


def test_auto_probes_once_caches_and_sends_the_schema(mmat_home, server):
    settings = load_settings(api_base=server.api_base, teacher="hosted_vllm/SmolLM2-135M-Instruct")
    assert structured_mode("hosted_vllm/SmolLM2-135M-Instruct", settings) == "json_schema"
    forget()  # a new process: the home's cache answers, no second probe
    assert structured_mode("hosted_vllm/SmolLM2-135M-Instruct", settings) == "json_schema"
    probes = [r for r in server.requests if r["method"] == "POST"]
    assert len(probes) == 1 and probes[0]["body"]["response_format"]["json_schema"]["name"] == "probe"
    cached = json.loads((settings.cache_dir / "structured_output.json").read_text())
    assert cached == {f"{server.api_base}|hosted_vllm/SmolLM2-135M-Instruct": "json_schema"}

    adapter = adapter_for("hosted_vllm/SmolLM2-135M-Instruct", settings)
    assert isinstance(adapter, StructuredAdapter) and adapter.mode == "json_schema"
    lm = build_lm("hosted_vllm/SmolLM2-135M-Instruct", settings=settings, cache=False)
    with dspy.context(lm=lm, adapter=adapter):
        assert dspy.Predict("question -> answer")(question="2+3?").answer == "5"
    sent = server.requests[-1]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == ["answer"]
    assert sent["json_schema"]["schema"]["additionalProperties"] is False


def test_a_server_refusing_response_format_is_probed_to_off(mmat_home):
    with FaultServer(served=["m"], responders={"m": answer}, structured_output=False) as server:
        settings = load_settings(api_base=server.api_base)
        assert structured_mode("hosted_vllm/m", settings) == "off"
        assert type(adapter_for("hosted_vllm/m", settings)) is dspy.ChatAdapter
        assert [r["body"]["response_format"]["type"] for r in server.requests if r["method"] == "POST"] == ["json_schema", "json_object"]


def test_explicit_modes_per_role_and_per_model_need_no_probe(mmat_home, server):
    settings = load_settings(api_base=server.api_base, structured_output="json_object",
                             judge="hosted_vllm/j", structured_output_for={"judge": "off", "hosted_vllm/x": "json_schema"})
    assert structured_mode("hosted_vllm/y", settings) == "json_object"
    assert structured_mode("hosted_vllm/j", settings) == "off"
    assert structured_mode("hosted_vllm/x", settings) == "json_schema"
    assert structured_mode("local/smollm2-135m", settings) == "native"
    assert not server.requests


def test_schema_adjusted_per_provider():
    schema = {"type": "object", "properties": {"q": {"type": "string", "minLength": 3, "maxLength": 9, "default": "x"},
                                               "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
              "required": ["q"]}
    strict = adjust_schema(schema, "openai", None)
    assert strict["properties"]["q"] == {"type": "string"} and strict["required"] == ["q", "items"]
    assert strict["properties"]["items"]["items"] == {"type": "object", "properties": {"a": {"type": "integer"}},
                                                      "required": ["a"], "additionalProperties": False}
    server = adjust_schema(schema, "hosted_vllm", "http://127.0.0.1:8000/v1")
    assert server["properties"]["q"]["minLength"] == 3 and server["properties"]["q"]["maxLength"] == 9
    assert server["additionalProperties"] is False and schema["required"] == ["q"]  # the input is not changed


@pytest.mark.parametrize("fault, code, words", [
    (Fault.status_code(429, "slow down please", retry_after=0), "rate-limited", "HTTP 429"),
    (Fault.status_code(500, "kaboom"), "server-error", "HTTP 500"),
    (Fault.malformed(), "malformed-reply", "not JSON"),
    (Fault.delay(2.0), "timeout", "no reply within 0.5 s"),
])
def test_transient_failures_are_classified_with_a_one_line_message(mmat_home, server, fault, code, words):
    settings = load_settings(api_base=server.api_base, teacher="hosted_vllm/SmolLM2-135M-Instruct", num_retries=0,
                             request_timeout_s=0.5, structured_output="off")
    server.set_plan(always(fault))
    lm = build_lm(settings.teacher, settings=settings, cache=False)
    with pytest.raises(Exception) as e, dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="hi")
    failure = describe_failure(e.value, settings, "mmat synth")
    assert failure.code == code and not failure.fatal and words in failure.message
    assert failure.message.startswith(f"teacher model 'hosted_vllm/SmolLM2-135M-Instruct' at {server.api_base}: ")
    assert "\n" not in failure.message
