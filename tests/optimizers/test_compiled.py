"""Compiled files: DSPy state plus the mmat header; loading into a module or a Synthesis stage; mismatches."""

import json

import dspy
import pytest

import mmat
from mmat.errors import ConfigError
from mmat.optimizers.compiled import CompiledHeader, load_compiled, read_header, save_compiled
from mmat.pool import ImagePool
from mmat.programs import CodeAgent, QueryFileVerifier, QueryGenerator, Synthesis

DEMO = {"domain": "finance: money", "tools": "- ocr", "examples": [], "n_queries": 1,
        "queries": [{"query": "How much was rent in March?", "intended_tools": ["ocr"], "file_needs": [],
                     "expected_answer_type": "number", "expected_answer": "950"}]}


def header(program="query_generator", module="query_generator", cls="QueryGenerator", **extra):
    return CompiledHeader(mmat_version=mmat.__version__, program=program, module=module, module_class=cls, **extra)


@pytest.fixture
def compiled_query_generator(tmp_path):
    """A QueryGenerator with a demo and new instructions, saved as a compiled file."""
    qg = QueryGenerator()
    qg.generate.demos = [dspy.Example(augmented=True, **DEMO)]
    qg.generate.signature = qg.generate.signature.with_instructions("Write concrete budgeting requests.")
    return save_compiled(qg, tmp_path / "qg.json", header(optimizer="bootstrap", metric_before=0.5, metric_after=0.75))


def test_file_is_dspy_json_with_the_header_first(compiled_query_generator):
    state = json.loads(compiled_query_generator.read_text())
    assert list(state)[0] == "mmat" and {"generate", "metadata"} <= set(state)
    head, _ = read_header(compiled_query_generator)
    assert (head.program, head.module, head.optimizer, head.metric_after) == ("query_generator", "query_generator", "bootstrap", 0.75)
    # DSPy's own loader still reads it (the header is an extra key it ignores)
    plain = QueryGenerator()
    plain.load(str(compiled_query_generator))
    assert plain.generate.demos[0]["queries"][0]["query"] == "How much was rent in March?"


def test_loads_demos_and_instructions_into_the_bare_module(compiled_query_generator):
    qg = load_compiled(QueryGenerator(), compiled_query_generator)
    assert isinstance(qg, QueryGenerator)
    assert qg.generate.signature.instructions == "Write concrete budgeting requests."
    assert len(qg.generate.demos) == 1 and qg.generate.demos[0]["domain"] == "finance: money"


def test_loads_into_the_matching_stage_of_synthesis_only(compiled_query_generator, settings):
    synthesis = Synthesis(ImagePool(), settings=settings)
    before = synthesis.query_verifier.verify.signature.instructions
    loaded = load_compiled(synthesis, compiled_query_generator)
    assert loaded is synthesis.query_generator
    assert synthesis.query_generator.generate.demos and synthesis.query_generator.generate.signature.instructions == (
        "Write concrete budgeting requests.")
    assert synthesis.query_verifier.verify.signature.instructions == before
    assert synthesis.agent.step.demos == [] and synthesis.file_generator.write.demos == []


def test_other_program_is_refused_naming_both(compiled_query_generator):
    with pytest.raises(ConfigError) as e:
        load_compiled(CodeAgent([]), compiled_query_generator)
    assert "compiled query_generator (QueryGenerator)" in str(e.value) and "code_agent" in str(e.value)


def test_other_mmat_major_version_is_refused(compiled_query_generator):
    state = json.loads(compiled_query_generator.read_text())
    state["mmat"]["mmat_version"] = "7.2.0"
    compiled_query_generator.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"compiled with mmat 7\.2\.0, expected mmat 0\.x"):
        load_compiled(QueryGenerator(), compiled_query_generator)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("not json {", "not JSON"),
    ("[1, 2]", "not a compiled mmat program"),
])
def test_files_that_are_not_compiled_programs_are_refused(tmp_path, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_compiled(QueryGenerator(), path)


def test_a_plain_dspy_save_is_refused(tmp_path):
    path = tmp_path / "plain.json"
    QueryGenerator().save(str(path))
    with pytest.raises(ConfigError, match="no 'mmat' header"):
        load_compiled(QueryGenerator(), path)


def test_predictors_that_do_not_match_are_refused_before_loading(tmp_path):
    verifier = QueryFileVerifier()
    path = save_compiled(verifier, tmp_path / "v.json", header("query_generator", "query_generator", "QueryGenerator"))
    qg = QueryGenerator()
    with pytest.raises(ConfigError, match=r"holds predictors \['verify'\] but query_generator has \['generate'\]"):
        load_compiled(qg, path)
    assert qg.generate.demos == []


def test_save_wants_a_json_path(tmp_path):
    with pytest.raises(ConfigError, match="ending in .json"):
        save_compiled(QueryGenerator(), tmp_path / "qg.pkl", header())


def test_a_header_whose_program_and_module_disagree_is_refused(tmp_path):
    qg = QueryGenerator()
    path = save_compiled(qg, tmp_path / "qg.json", header(program="agent"))
    with pytest.raises(ConfigError, match="names program 'agent' but module 'query_generator'"):
        load_compiled(QueryGenerator(), path)
    path = save_compiled(qg, tmp_path / "qg2.json", header(cls="CodeAgent"))
    with pytest.raises(ConfigError, match="names CodeAgent but the query_generator stage is a QueryGenerator"):
        load_compiled(QueryGenerator(), path)


def test_describe_loaded_and_state_digest(compiled_query_generator):
    from mmat.optimizers.compiled import describe_loaded, state_digest

    qg = load_compiled(QueryGenerator(), compiled_query_generator)
    line = describe_loaded(compiled_query_generator, qg)
    assert line == (f"loaded {compiled_query_generator}: compiled query_generator (bootstrap, metric 0.500 -> 0.750, "
                    "1 demo(s), run -) into the query_generator stage")
    assert state_digest(qg) != state_digest(QueryGenerator()) and state_digest(QueryGenerator()) == state_digest(QueryGenerator())
