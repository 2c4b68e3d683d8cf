"""The shipped fixtures point all state at a temp dir."""

import os

from mmat.config import load_settings


def test_mmat_home_moves_all_state(mmat_home):
    assert os.environ["MMAT_HOME"] == str(mmat_home) and mmat_home.is_dir() and not any(mmat_home.iterdir())
    settings = load_settings()
    assert settings.home == mmat_home and settings.db_path.parent == mmat_home


def test_mmat_settings_creates_the_dirs(mmat_settings, mmat_home):
    assert mmat_settings.home == mmat_home
    assert mmat_settings.models_dir.is_dir() and mmat_settings.cache_dir.is_dir()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
