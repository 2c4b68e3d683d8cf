"""The registry: declarations, argument binding, prompt rendering, specs and availability rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import pytest

from mmat.errors import ConfigError
from mmat.tools import (
    REGISTRY,
    TOOL_NAMES,
    ToolArgumentError,
    ToolUnavailableError,
    available_tools,
    describe_tools,
    get_tool,
    tool,
    tool_specs,
    tool_status,
)

GOLDEN = Path(__file__).parent / "golden" / "describe_tools.txt"


def test_builtin_tools_are_registered_in_mat_order():
    assert TOOL_NAMES == (
        "visualizer", "ocr", "facedetection", "objectlocation", "segmentation",
        "image_edit", "image_generator", "inspect_file_as_text", "ask_search_agent", "final_answer",
    )
    assert tuple(REGISTRY)[: len(TOOL_NAMES)] == TOOL_NAMES


def test_describe_tools_matches_golden_file():
    """The agent prompt's tool list is product copy: changes to it must be deliberate (MMAT_UPDATE_GOLDEN=1)."""
    text = describe_tools()
    if os.environ.get("MMAT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text + "\n")
    assert text + "\n" == GOLDEN.read_text()


def test_describe_tools_renders_python_signatures_and_always_ends_with_final_answer():
    text = describe_tools(["ocr", "inspect_file_as_text"])
    lines = text.splitlines()
    assert lines[0].startswith("- ocr(image_path: str) -> str: Read the text")
    assert "- inspect_file_as_text(file_path: str, question: str | None = None) -> str:" in text
    assert [l for l in lines if l.startswith("- ")][-1].startswith("- final_answer(answer: Any) -> str:")
    assert "- visualizer(" not in text
    assert describe_tools(["ocr"]) == describe_tools(["ocr"])  # stable


def test_tool_specs_describe_inputs_and_output():
    spec = {s["name"]: s for s in tool_specs()}
    assert set(spec) == set(TOOL_NAMES)
    edit = spec["image_edit"]
    assert list(edit["inputs"]) == ["prompt", "image_path"]
    assert edit["inputs"]["image_path"]["type"] == "string"
    assert edit["output"]["type"] == "string"
    assert spec["inspect_file_as_text"]["inputs"]["question"]["nullable"] is True
    assert spec["segmentation"]["inputs"]["prompt"]["type"] == "string"


def test_tool_status_lists_every_tool_with_reasons(settings):
    rows = tool_status(settings)
    assert {r.tool for r in rows} == set(TOOL_NAMES)
    assert all(r.reason for r in rows)
    by_key = {(r.tool, r.backend): r for r in rows}
    # offline backends that must work on any machine that installed mmat
    for key in [("ocr", "rapidocr"), ("facedetection", "opencv-haar"), ("segmentation", "grabcut"),
                ("inspect_file_as_text", "markitdown"), ("ask_search_agent", "bm25"), ("visualizer", "derived")]:
        assert by_key[key].available and by_key[key].active, key
    owl = by_key[("objectlocation", "owlv2")]
    assert not owl.available and str(settings.models_dir / "owlv2") in owl.reason
    assert not by_key[("ask_search_agent", "web")].available
    assert "TAVILY_API_KEY" in by_key[("ask_search_agent", "web")].reason
    # the default text model is the teacher, so the lm-driven backends are available
    assert by_key[("image_edit", "pil-ops")].available
    assert settings.teacher in by_key[("image_edit", "pil-ops")].reason
    # one active backend per tool and input kind
    assert sum(r.active for r in rows if r.tool == "segmentation") == 1


def test_tool_status_without_a_text_model(settings):
    rows = {(r.tool, r.backend): r for r in tool_status(settings, lm=None)}
    edit = rows[("image_edit", "pil-ops")]
    assert not edit.available and "text model" in edit.reason
    assert not rows[("image_generator", "matplotlib-chart")].available
    assert "image_edit" not in available_tools(settings, lm=None)
    assert "ocr" in available_tools(settings, lm=None)


def test_search_backend_setting_selects_and_rejects(settings):
    rows = {r.backend: r for r in tool_status(settings.model_copy(update={"search_backend": "simulated"})) if r.tool == "ask_search_agent"}
    assert rows["simulated"].active
    assert not rows["bm25"].active and "not selected" in rows["bm25"].reason
    with pytest.raises(ConfigError, match="search_backend must be one of auto, bm25, simulated, web"):
        tool_status(settings.model_copy(update={"search_backend": "google"}))


def test_bind_validates_arguments():
    ocr = get_tool("ocr")
    assert ocr.bind({"image_path": "a.png"}) == {"image_path": "a.png"}
    with pytest.raises(ToolArgumentError, match=r"missing argument 'image_path'; call it as ocr\(image_path: str\)"):
        ocr.bind({})
    with pytest.raises(ToolArgumentError, match="unexpected argument 'path'"):
        ocr.bind({"path": "a.png"})
    with pytest.raises(ToolArgumentError, match="argument 'image_path' must be str, got int"):
        ocr.bind({"image_path": 3})
    inspect = get_tool("inspect_file_as_text")
    assert inspect.bind({"file_path": "a.pdf"}) == {"file_path": "a.pdf", "question": None}
    assert get_tool("segmentation").bind({"image_path": "a.png", "prompt": [1, 2, 3, 4]})["prompt"] == [1, 2, 3, 4]


def test_declarations_are_checked_when_registered():
    with pytest.raises(TypeError, match="must be Annotated"):
        @tool(returns="x", name="bad_tool_no_annotation")
        def bad(x: str) -> str:
            """Doc."""
    with pytest.raises(TypeError, match="needs a docstring"):
        @tool(returns="x", name="bad_tool_no_doc")
        def bad2(x: Annotated[str, "an x"]) -> str: ...

    @tool(returns="the echo", name="echo_for_test")
    def echo(text: Annotated[str, "What to echo."]) -> str:
        """Echo text back."""

    try:
        with pytest.raises(TypeError, match="takes \\['other'\\], the tool declares \\['text'\\]"):
            @echo.backend("wrong")
            def _wrong(ctx, other: str) -> str:
                return other

        @echo.backend("offline", check=lambda env: (False, "switched off for the test"))
        def _echo(ctx, text: str) -> str:
            return text

        assert "- echo_for_test(text: str) -> str: Echo text back." in describe_tools(["echo_for_test"])
        with pytest.raises(ToolUnavailableError, match="echo_for_test cannot run here \\(offline: switched off for the test\\)"):
            echo.dispatch(_Ctx(), {"text": "hi"})
    finally:
        del REGISTRY["echo_for_test"]
    assert "bad_tool_no_annotation" not in REGISTRY and "bad_tool_no_doc" not in REGISTRY


class _Ctx:
    """The smallest context dispatch needs (only .env is read before a backend runs)."""

    env = None


def test_the_final_tool_is_a_property_of_the_registry_not_a_name(tmp_path):
    """A second tool declared final=True is treated like final_answer everywhere a run's end matters."""
    import re

    from mmat.programs.action_grammar import action_pattern
    from mmat.programs.query_generator import validate_specs
    from mmat.programs.rules import RuleOptions, TaskSubject, check_tools_available
    from mmat.signatures.queries import QuerySpec
    from mmat.tools import final_tool_names, is_final, without_final

    assert final_tool_names() == ["final_answer"] and is_final("final_answer") and not is_final("ocr")

    @tool(returns="nothing: the run ends", name="give_up_for_test", host=False, final=True)
    def give_up(reason: Annotated[str, "Why the task cannot be solved."]) -> str:
        """Stop without an answer."""

    try:
        assert final_tool_names() == ["final_answer", "give_up_for_test"]
        assert without_final(["give_up_for_test", "ocr", "final_answer", "not_a_tool"]) == ["ocr", "not_a_tool"]
        pattern = action_pattern(["ocr", "give_up_for_test"], [])
        assert re.fullmatch(pattern, "give_up_for_test('the photo is blank')")
        assert not re.fullmatch(pattern, "print(give_up_for_test(reason='x'))")  # never called as a host tool
        spec = QuerySpec(query="What does the sign in this photo say?", intended_tools=["ocr", "give_up_for_test"],
                         file_needs=[], expected_answer_type="short_text")
        result = validate_specs([spec], ["ocr"])
        assert [s.intended_tools for s in result.specs] == [["ocr"]]  # accepted, never kept as an intended tool
        assert result.n_invalid_tools == 0
        task = TaskSubject(query="What does the sign say?", intended_tools=["give_up_for_test"], available_tools=["ocr"])
        assert check_tools_available(task, RuleOptions()) is None
    finally:
        del REGISTRY["give_up_for_test"]
    assert without_final(["give_up_for_test"]) == ["give_up_for_test"]  # unregistered: an ordinary (unknown) name
