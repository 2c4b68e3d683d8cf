"""Shared fixtures for the tool tests: a temp MMAT_HOME, a workspace, real inputs made in the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mmat.config import Settings
from mmat.tools import WorkspaceToolHost

from .helpers import render_text


@pytest.fixture
def mmat_home(mmat_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mmat's temp home (mmat.testing.fixtures), with an empty HF cache and no web-search keys."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache: no weights leak in from the machine
    for key in ("TAVILY_API_KEY", "BRAVE_SEARCH_API_KEY", "SERPAPI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return mmat_home


@pytest.fixture
def settings(mmat_settings: Settings) -> Settings:
    return mmat_settings


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    return ws


@pytest.fixture
def make_host(settings: Settings, workspace: Path) -> Callable[..., WorkspaceToolHost]:
    """``make_host(lm=..., names=..., **setting_overrides)``: a WorkspaceToolHost on the test workspace."""

    def make(**kwargs) -> WorkspaceToolHost:
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in Settings.model_fields}
        s = settings.model_copy(update=overrides) if overrides else settings
        return WorkspaceToolHost(s, workspace, **kwargs)

    return make


@pytest.fixture
def text_image(workspace: Path) -> Path:
    path = workspace / "note.png"
    render_text(["Invoice total 42.50 EUR", "Meeting room B12 at noon"]).save(path)
    return path


@pytest.fixture
def astronaut(workspace: Path) -> Path:
    from skimage import data

    path = workspace / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path




@pytest.fixture
def scripted_lm(settings: Settings, request: pytest.FixtureRequest):
    """``scripted_lm(responses) -> (DummyLM, dspy.LM)``: a real dspy.LM answering from the script (no cache)."""
    from mmat.lm import build_lm
    from mmat.testing import DummyLM

    def make(responses, name: str | None = None):
        dummy = DummyLM(responses, name=name or f"tools-{request.node.name[:40].replace('[', '-').replace(']', '')}")
        return dummy, build_lm(dummy.model, settings=settings, cache=False)

    return make
