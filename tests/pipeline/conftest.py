import pytest

from mmat.config import load_settings
from mmat.testing import scripted

TOOLS = ["inspect_file_as_text", "visualizer"]


@pytest.fixture
def scripted_models():
    return scripted.register()


@pytest.fixture
def synth_settings(mmat_home):
    return load_settings(home=mmat_home, teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                         dedup_threshold=0.99, concurrency=2, step_timeout_s=20)
