"""pytest fixtures every mmat test suite can use: ``pytest_plugins = ["mmat.testing.fixtures"]``.

Tests never touch the user's ``./.mmat``: ``mmat_home`` points ``MMAT_HOME`` at a fresh temp dir (so
``load_settings()`` and ``build_lm`` put the store, caches and DSPy's disk cache there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mmat.lm  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before a test module imports litellm)

from mmat.config import Settings, load_settings

__all__ = ["mmat_home", "mmat_settings", "offline_env"]


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the Makefile exports for tests, for runs that bypass it."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def mmat_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_env: None) -> Iterator[Path]:
    """A fresh MMAT_HOME for one test (created, empty)."""
    home = tmp_path / "mmat_home"
    home.mkdir()
    monkeypatch.setenv("MMAT_HOME", str(home))
    yield home


@pytest.fixture
def mmat_settings(mmat_home: Path) -> Settings:
    """``load_settings()`` under the temp ``mmat_home`` (directories created)."""
    settings = load_settings()
    settings.ensure_dirs()
    return settings
