"""Shared fixtures for the eval tests."""

import pytest


@pytest.fixture
def mmat_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MMAT_HOME", str(home))
    return home
