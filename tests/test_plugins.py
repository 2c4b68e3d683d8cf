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
    from mmat.runtime import open_store

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
