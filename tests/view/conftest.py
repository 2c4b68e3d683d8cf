from pathlib import Path

import pytest

from mmat.config import load_settings
from tests.view.storefix import build_store


@pytest.fixture(scope="module")
def view_store(tmp_path_factory) -> tuple[Path, dict]:
    """A fixture store (built once per test module: tests that write labels use their own copy)."""
    home = tmp_path_factory.mktemp("view") / "home"
    return home, build_store(home)


@pytest.fixture
def view_settings(view_store, monkeypatch):
    home, _ = view_store
    monkeypatch.setenv("MMAT_HOME", str(home))
    return load_settings(home=home)


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    """A store of one's own, for tests that write (labels) or lock it."""
    home = tmp_path / "home"
    ids = build_store(home)
    monkeypatch.setenv("MMAT_HOME", str(home))
    return load_settings(home=home), ids


@pytest.fixture
def client_for():
    from starlette.testclient import TestClient

    from mmat.view import create_app

    def make(settings, **kwargs):
        return TestClient(create_app(settings, **kwargs), base_url="http://127.0.0.1")

    return make
