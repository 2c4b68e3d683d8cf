"""Fixtures for the program tests: a temp MMAT_HOME, dummy-model settings, a small real image pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dspy
import pytest

from mmat.config import Settings, load_settings
from mmat.pool import ImagePool
from mmat.testing.fixtures import mmat_home, offline_env  # noqa: F401  (fixtures)


@pytest.fixture
def settings(mmat_home) -> Settings:  # noqa: F811
    """Settings whose roles all point at dummy models (scripted per test)."""
    s = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent", temperature=0.7)
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def small_pool() -> ImagePool:
    """The builtin pool (real photos, real MiniLM embeddings), built once per session."""
    return ImagePool.build_default()


@pytest.fixture
def use_lm(settings) -> Callable[..., Any]:
    """``with use_lm("dummy/x"):`` runs predictors on that model, uncached, with ChatAdapter."""

    @contextmanager
    def _use(model: str, adapter: Any = None) -> Iterator[dspy.LM]:
        from mmat.lm import build_lm

        lm = build_lm(model, settings=settings, cache=False)
        with dspy.context(lm=lm, adapter=adapter or dspy.ChatAdapter()):
            yield lm

    return _use
