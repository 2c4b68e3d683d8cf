"""WorkspaceToolHost: which tools the sandbox gets, positional signatures, and what calls return."""

from __future__ import annotations

import pytest

from mmat.errors import ConfigError
from mmat.tools import ToolArgumentError, ToolUnavailableError


def test_default_names_are_the_tools_that_run_here(make_host):
    host = make_host()  # no text model: the lm-driven tools are left out
    assert host.names() == ["visualizer", "ocr", "facedetection", "segmentation", "inspect_file_as_text", "ask_search_agent"]
    assert "final_answer" not in host.names()


def test_explicit_names_are_kept_even_when_unavailable(make_host):
    host = make_host(names=["objectlocation", "ocr", "final_answer"])
    assert host.names() == ["ocr", "objectlocation"]  # registry order; final_answer lives in the sandbox
    with pytest.raises(ToolUnavailableError, match=r"objectlocation cannot run here \(owlv2: no local OWLv2"):
        host.call("objectlocation", {"object": "cat", "image_path": "x.png"})
    with pytest.raises(ConfigError, match="unknown tool\\(s\\) teleport"):
        make_host(names=["teleport"])


def test_signature_and_unknown_tools(make_host):
    host = make_host(names=["segmentation", "ocr"])
    assert host.signature("segmentation") == ["image_path", "prompt"]
    with pytest.raises(ToolArgumentError, match="unknown tool 'visualizer'; the tools you can call are: ocr, segmentation"):
        host.call("visualizer", {"question": "?", "image_path": "a.png"})
    with pytest.raises(ToolArgumentError, match="final_answer runs inside the sandbox"):
        host.call("final_answer", {"answer": 1})


def test_status_covers_the_hosts_tools(make_host):
    rows = make_host(names=["ocr", "segmentation"]).status()
    assert {(r.tool, r.backend) for r in rows} == {("ocr", "rapidocr"), ("segmentation", "sam"), ("segmentation", "grabcut")}


def test_for_workspace_rebinds_paths_and_keeps_the_tool_list(make_host, workspace, tmp_path):
    from PIL import Image

    host = make_host(names=["ocr", "facedetection"])
    fork_dir = tmp_path / "fork"
    fork_dir.mkdir()
    Image.new("RGB", (40, 40), "white").save(fork_dir / "only_in_fork.png")
    fork = host.for_workspace(fork_dir)
    assert fork.names() == host.names() and fork.workspace == fork_dir.resolve()
    assert fork.call("ocr", {"image_path": "only_in_fork.png"}) == "No text found in 'only_in_fork.png'."
    with pytest.raises(ToolArgumentError, match="file not found in the workspace"):
        host.call("ocr", {"image_path": "only_in_fork.png"})
