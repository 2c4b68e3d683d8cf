"""Plug-ins: a tool from a module named by MMAT_PLUGINS is listed, accepted by synth and called by the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmat.errors import ConfigError
from mmat.plugins import PLUGINS_ENV, load_plugins

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _registry_restored():
    """Plug-ins loaded in this process are forgotten after each test, so later tests see the built-ins only."""
    import mmat.plugins as plugins
    from mmat.tools.registry import REGISTRY

    tools, loaded = dict(REGISTRY), dict(plugins._loaded)
    yield
    REGISTRY.clear()
    REGISTRY.update(tools)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    plugins._env_seen = None
    for name in ("custom_tool", "hooked_plugin"):  # so the next test imports (and registers) them again
        sys.modules.pop(name, None)


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def test_mmat_tools_lists_a_plugin_tool_with_its_source(mmat_home):
    out = subprocess.run([sys.executable, "-m", "mmat.cli", "tools", "--json"], capture_output=True, text=True,
                         env=_env(**{PLUGINS_ENV: "custom_tool"}), timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["tool"] == "word_count"]
    assert rows == [{"tool": "word_count", "backend": "python", "available": True,
                     "reason": "pure Python, always available", "active": True, "source": "custom_tool"}]


def test_a_plugin_that_fails_to_import_is_one_error_naming_it(mmat_home):
    out = subprocess.run([sys.executable, "-m", "mmat.cli", "tools"], capture_output=True, text=True,
                         env=_env(**{PLUGINS_ENV: "custom_tool,no_such_plugin_module"}), timeout=300)
    assert out.returncode == 1
    assert "Error: mmat plug-in 'no_such_plugin_module' (MMAT_PLUGINS) failed to load: ModuleNotFoundError" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_plugin_hook_callable_is_called_once(monkeypatch, tmp_path):
    (tmp_path / "hooked_plugin.py").write_text("CALLS = []\ndef register():\n    CALLS.append(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_ENV, "hooked_plugin:register")
    load_plugins()
    load_plugins()
    import hooked_plugin

    assert hooked_plugin.CALLS == [1]
    monkeypatch.setenv(PLUGINS_ENV, "hooked_plugin:missing")
    with pytest.raises(ConfigError, match="'hooked_plugin:missing' .* AttributeError"):
        load_plugins()


def _world():
    """The scripted world, with tasks that intend the plug-in tool and an agent that calls it first."""
    from mmat.testing import scripted
    from mmat.testing.dummy import DummyLM

    def teacher(messages, fields):
        out = scripted.teacher(messages, fields)
        if fields == ["queries"]:
            for spec in out["queries"]:
                spec["intended_tools"] = ["word_count", "inspect_file_as_text"]
        return out

    def agent(messages, fields):
        if scripted.field(messages, "files") is not None and fields != ["answer"]:
            return {"thought": "Count the words of the question first.", "code": "print(word_count('how much rent'))"}
        return scripted.agent(messages, fields)

    return DummyLM(teacher, name="teacher"), DummyLM(scripted.verifier, name="verifier"), DummyLM(agent, name="agent")


def test_synth_accepts_the_plugin_tool_and_the_agent_calls_it(mmat_home, monkeypatch):
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.store import open_store

    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv(PLUGINS_ENV, "custom_tool")
    _world()
    settings = load_settings(home=mmat_home, teacher="dummy/teacher", verifier="dummy/verifier",
                             controller="dummy/agent", dedup_threshold=0.99, concurrency=1, step_timeout_s=20)
    run_synth(settings, SynthRequest(tasks=1, tools=["word_count", "inspect_file_as_text"], trajectories_per_task=1),
              progress=False)
    with open_store(settings, read_only=True) as store:
        calls = store.sql("select c.name, c.result from steps s, unnest(s.tool_calls) as u(c) "
                          "where c.name = 'word_count'")
        prompt = store.sql("select count(*) as n from lm_calls where model = 'dummy/agent' "
                           "and messages::varchar like '%word_count(text: str)%'")
    assert calls and all(c["result"] == "3" for c in calls)
    assert prompt[0]["n"] > 0  # the agent prompt lists the plug-in tool like a built-in


def test_synth_refuses_an_unknown_tool_listing_plugin_tools_too(mmat_home, monkeypatch):
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth

    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv(PLUGINS_ENV, "custom_tool")
    settings = load_settings(home=mmat_home, teacher="dummy/teacher")
    with pytest.raises(ConfigError, match=r"unknown tool\(s\) nope: choose from .*word_count"):
        run_synth(settings, SynthRequest(tasks=1, tools=["nope"]), progress=False)


_PROVIDER_PLUGIN = '''
import json
import time

from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse

from mmat.lm import ModelCapabilities, register_provider

REQUESTS = []


class OneStep(CustomLLM):
    def completion(self, model, messages, optional_params=None, **_):
        REQUESTS.append(dict(optional_params or {}))
        text = json.dumps({"thought": "Read the page.", "code": "print(ocr(image_path='page.png'))"})
        return ModelResponse(model=model, created=int(time.time()),
                             choices=[Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=text))])


register_provider("patterned", OneStep(), capabilities=ModelCapabilities(
    in_process=True, native_structured=True, constrained_decoding=True, field_patterns=True, action_grammar_by_default=True))
register_provider("schema_only", OneStep(), capabilities=ModelCapabilities(
    in_process=True, native_structured=True, constrained_decoding=True))
'''


def test_a_plugin_provider_declares_what_its_models_can_do_and_programs_follow(mmat_home, monkeypatch, tmp_path):
    """No prefix is special: a provider from MMAT_PLUGINS that declares field patterns gets the agent's action
    grammar (and the JSON adapter, no retries, no key check); one that does not is never sent patterns."""
    import dspy
    import litellm

    import mmat.lm as lm
    from mmat.config import load_settings
    from mmat.programs.agent import CodeAgent

    (tmp_path / "provider_plugin.py").write_text(_PROVIDER_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_ENV, "provider_plugin")
    settings = load_settings(home=mmat_home)
    try:
        patterned = lm.build_lm("patterned/m", settings=settings, cache=False)  # loads the plug-in first
        import provider_plugin

        assert patterned.num_retries == 0
        lm.check_model("patterned/m", settings)  # in-process: no key, no server
        assert isinstance(lm.adapter_for("patterned/m"), dspy.JSONAdapter)
        assert lm.structured_mode("patterned/m") == "native"
        agent = CodeAgent(["ocr"], settings=settings)
        with dspy.context(lm=patterned, adapter=lm.adapter_for("patterned/m")):
            assert agent.uses_action_grammar()  # auto: the provider says its models need it
            assert agent.propose("Read the page.", [], [], tools=["ocr"], multimodal=False)[1] == \
                "print(ocr(image_path='page.png'))"
        assert provider_plugin.REQUESTS[-1]["mmat_field_patterns"]["code"].startswith("^(print\\(ocr\\(image_path=")

        forced = CodeAgent(["ocr"], settings=settings.model_copy(update={"agent_action_grammar": "on"}))
        plain = lm.build_lm("schema_only/m", settings=settings, cache=False)
        with dspy.context(lm=plain, adapter=lm.adapter_for("schema_only/m")):
            assert not forced.uses_action_grammar()  # "on" cannot constrain a model that takes no patterns
            forced.propose("Read the page.", [], [], tools=["ocr"], multimodal=False)
        assert "mmat_field_patterns" not in provider_plugin.REQUESTS[-1]
    finally:
        with lm._lock:
            for name in ("patterned", "schema_only"):
                lm._providers.pop(name, None)
            litellm.custom_provider_map = [p for p in litellm.custom_provider_map
                                           if p.get("provider") not in ("patterned", "schema_only")]
        sys.modules.pop("provider_plugin", None)
