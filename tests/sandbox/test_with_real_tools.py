"""The sandbox with mmat's real WorkspaceToolHost: names, positional mapping, /workspace paths, tool errors."""

from __future__ import annotations

import pytest

from mmat.config import load_settings
from mmat.sandbox import Limits, Sandbox

from .helpers import needs_root

pytestmark = needs_root
tools = pytest.importorskip("mmat.tools")


def test_real_tool_host_over_rpc(workspace, mmat_home):
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    Image.fromarray(data.astronaut()).save(workspace / "astronaut.png")
    host = tools.WorkspaceToolHost(load_settings(), workspace, names=["facedetection"])
    with Sandbox(workspace, tools=host, limits=Limits(wall_s=20)) as sb:
        r = sb.run("found = facedetection('astronaut.png')\nprint(found.splitlines()[0])")
        assert r.error is None, r.error
        assert r.tool_calls[0].arguments == {"image_path": "astronaut.png"}
        assert "1 face" in r.stdout
        r = sb.run("try:\n    facedetection(image_path='/workspace/../../etc/passwd')\nexcept ToolError as e:\n    print('refused:', e)")
        assert r.stdout.startswith("refused: facedetection:") and r.tool_calls[0].error.startswith("ToolError: ")
        r = sb.run("print(len(found) > 0)")  # state survived the tool error
        assert r.stdout == "True\n"
