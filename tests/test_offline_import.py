"""`import mmat` keeps litellm offline even when the user imports DSPy/litellm right after it."""

import os
import subprocess
import sys


def test_import_mmat_then_dspy_never_fetches_the_price_map():
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    code = "import os, mmat, dspy, litellm; print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "cost map" not in done.stderr.lower(), done.stderr  # litellm warns when its remote fetch fails


def test_a_users_own_setting_is_kept():
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="False")
    code = "import os, mmat; print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"
