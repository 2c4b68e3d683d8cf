"""Fixtures for the sandbox tests (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmat.sandbox import Sandbox

from .helpers import FAST, FakeTools


@pytest.fixture
def mmat_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MMAT_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def sandbox(workspace, mmat_home):
    with Sandbox(workspace, limits=FAST) as sb:
        yield sb


@pytest.fixture
def tool_sandbox(workspace, mmat_home):
    tools = FakeTools(workspace)
    with Sandbox(workspace, tools=tools, limits=FAST) as sb:
        sb.fake_tools = tools  # type: ignore[attr-defined]
        yield sb
