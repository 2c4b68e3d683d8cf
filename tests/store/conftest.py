"""Fixtures for the store tests: every test gets its own MMAT_HOME and store file."""

import os

# litellm must never try to fetch its price map (no network in tests); set before anything imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402

from mmat.config import load_settings  # noqa: E402
from mmat.store import Store  # noqa: E402


@pytest.fixture
def mmat_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MMAT_HOME", str(home))
    return home


@pytest.fixture
def store(mmat_home):
    s = Store.for_settings(load_settings())
    yield s
    s.close()
