"""QueryGenerator: tool names held to the offered tools, bounds, unreadable answers."""

import pytest

from mmat.errors import ModelOutputError
from mmat.programs import QueryGenerator, validate_specs
from mmat.programs.seeds import load_seed_examples
from mmat.signatures.queries import QuerySpec
from mmat.testing import DummyLM

TOOLS = ["ocr", "visualizer", "inspect_file_as_text"]


def spec(query, tools, **kw):
    return QuerySpec(query=query, intended_tools=tools, file_needs=kw.pop("file_needs", []),
                     expected_answer_type=kw.pop("answer_type", "short_text"), **kw)


def spec_dict(query, tools):
    return spec(query, tools, file_needs=[{"modality": "image", "content": "a printed page", "name_hint": "page"}]).model_dump()


def test_unknown_tools_are_dropped_and_counted():
    result = validate_specs(
        [spec("Read the page in this photo.", ["ocr", "web_browser", "ocr", "final_answer"]),
         spec("Which is the red car here?", ["car_finder"]),
         spec("Read the page in this photo.", ["visualizer"])],
        TOOLS,
    )
    assert [s.intended_tools for s in result.specs] == [["ocr"]]
    assert result.n_invalid_tools == 2 and result.invalid_tools == ["web_browser", "car_finder"]
    assert [r.reason for r in result.rejected] == ["names no tool from the offered tools",
                                                   "duplicate of another query in the same batch"]


def test_specs_beyond_the_limit_are_rejected():
    specs = [spec(f"Question number {i} about this photo?", ["ocr"]) for i in range(4)]
    result = validate_specs(specs, TOOLS, limit=2)
    assert len(result.specs) == 2 and len(result.rejected) == 2
    assert "more than the 2" in result.rejected[0].reason


def test_generator_prompts_with_domain_tools_examples_and_validates(use_lm):
    dm = DummyLM([{"queries": [spec_dict("What does the heading on this page say?", ["ocr", "telescope"]),
                               spec_dict("Describe the picture on this page.", ["visualizer"])]}], name="qgen")
    examples = load_seed_examples()[:2]
    with use_lm("dummy/qgen"):
        result = QueryGenerator(n_queries=2)("education: homework", TOOLS, examples, tool_descriptions="- ocr(...)")
    assert [s.intended_tools for s in result.specs] == [["ocr"], ["visualizer"]]
    assert result.n_invalid_tools == 1
    prompt = dm.calls[0].messages[-1]["content"]
    assert "education: homework" in prompt and "- ocr(...)" in prompt and examples[0].query in prompt
    assert "[[ ## n_queries ## ]]\n2" in prompt


def test_generator_renders_the_tools_it_is_given(use_lm):
    dm = DummyLM([{"queries": [spec_dict("What does the heading on this page say?", ["ocr"])]}], name="qgen2")
    with use_lm("dummy/qgen2"):
        QueryGenerator(n_queries=1)("education", ["ocr"], [])
    prompt = dm.calls[0].messages[-1]["content"]
    assert "ocr(" in prompt and "final_answer(" in prompt and "visualizer(" not in prompt


def test_unreadable_answer_is_a_model_output_error(use_lm):
    DummyLM([{"queries": "three good questions"}], name="qgen3", cycle=True)  # ChatAdapter retries as JSON
    with use_lm("dummy/qgen3"), pytest.raises(ModelOutputError, match="query generation"):
        QueryGenerator()("education", TOOLS, [], tool_descriptions="- ocr")


def test_n_queries_is_bounded():
    with pytest.raises(ValueError, match="between 1 and 5"):
        QueryGenerator(n_queries=9)


def test_json_adapter_sends_the_offered_tools_as_an_enum(use_lm):
    import dspy

    dm = DummyLM([{"queries": [spec_dict("What does the heading on this page say?", ["ocr"])]}], name="qgen_enum")
    with use_lm("dummy/qgen_enum"), dspy.context(adapter=dspy.JSONAdapter()):
        result = QueryGenerator(n_queries=1)("education", ["ocr", "visualizer"], [], tool_descriptions="- ocr")
    assert [s.intended_tools for s in result.specs] == [["ocr"]]
    assert type(result.specs[0]) is QuerySpec  # callers get the plain spec type back
    system = dm.calls[0].messages[0]["content"]  # the output schema the JSON adapter describes (and constrains)
    assert '"items": {"type": "string", "enum": ["ocr", "visualizer"]}' in system.replace("\\", "")
