"""`mmat serve --engine local`: an OpenAI-compatible endpoint over the local provider, and the serve plan."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.errors import ConfigError
from mmat.local.server import build_app
from mmat.pipeline.serve import adapter_problems, plan_serve


@pytest.fixture
def client(tiny_adapter_dir):
    from starlette.testclient import TestClient

    return TestClient(build_app(str(tiny_adapter_dir), "student"))


def test_models_lists_the_one_served_id(client):
    body = client.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["student"]


def test_chat_completion_answers_in_openai_shape(client):
    r = client.post("/v1/chat/completions", json={"model": "student", "max_tokens": 5, "temperature": 0,
                                                   "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "student"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert 0 < body["usage"]["completion_tokens"] <= 5 and body["usage"]["prompt_tokens"] > 0


def test_json_schema_response_format_is_decoded_under_the_schema(client):
    schema = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"],
              "additionalProperties": False}
    r = client.post("/v1/chat/completions", json={
        "model": "student", "max_tokens": 40, "messages": [{"role": "user", "content": "6*7?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"])["answer"], bool)


@pytest.mark.parametrize("body, status, code", [
    ({"model": "other", "messages": [{"role": "user", "content": "Hi"}]}, 404, "model_not_found"),
    ({"model": "student", "messages": []}, 400, "invalid_messages"),
    ({"model": "student", "messages": "Hi"}, 400, "invalid_messages"),
    ({"model": "student", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}, 400, "unsupported"),
])
def test_bad_requests_get_openai_errors_that_name_the_fix(client, body, status, code):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status and r.json()["error"]["code"] == code
    if code == "model_not_found":
        assert "this server serves 'student'" in r.json()["error"]["message"]


def test_a_body_that_is_not_json_is_a_400(client):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_litellm_reaches_the_served_student_as_hosted_vllm(tiny_adapter_dir):
    """The route `mmat eval --controller hosted_vllm/NAME --api-base ...` takes, over a real loopback socket."""
    import litellm
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(str(tiny_adapter_dir), "student"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        reply = litellm.completion(model="hosted_vllm/student", api_base=f"http://127.0.0.1:{port}/v1", api_key="none",
                                   messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
        assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_plan_without_vllm_offers_the_local_engine(tiny_adapter_dir):
    plan = plan_serve(tiny_adapter_dir, port=8123)
    assert plan.engine == "local" and plan.api_base == "http://127.0.0.1:8123/v1"
    assert plan.command[:3] == ["mmat", "serve", str(tiny_adapter_dir.resolve())] and "--run" in plan.command
    assert "vllm is not installed" in plan.why or "no CUDA GPU" in plan.why
    with pytest.raises(ConfigError, match="--engine vllm: .* Use --engine local"):
        plan_serve(tiny_adapter_dir, engine="vllm")


def test_cli_prints_the_command_and_the_eval_line(tiny_adapter_dir):
    result = CliRunner().invoke(cli, ["serve", str(tiny_adapter_dir), "--port", "8124", "--name", "s1"])
    assert result.exit_code == 0, result.output
    assert "engine: local" in result.output
    assert "mmat eval --controller hosted_vllm/s1 --api-base http://127.0.0.1:8124/v1" in result.output


def test_not_an_adapter_dir_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a LoRA adapter directory (no adapter_config.json)" in result.output


def test_adapter_checks_accept_language_model_lora_and_refuse_the_rest(tiny_adapter_dir, tmp_path):
    assert adapter_problems(tiny_adapter_dir) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((tiny_adapter_dir / "adapter_config.json").read_text())
    cfg.update(target_modules=["model.vision_model.encoder.layers.0.self_attn.q_proj"], modules_to_save=["lm_head"],
               use_dora=True)
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    (bad / "adapter_model.safetensors").write_bytes((tiny_adapter_dir / "adapter_model.safetensors").read_bytes())
    problems = adapter_problems(bad)
    assert any("vision-tower" in p for p in problems)
    assert any("modules_to_save" in p for p in problems) and any("DoRA" in p for p in problems)
    with pytest.raises(ConfigError, match="cannot be served as a LoRA adapter"):
        plan_serve(bad)
