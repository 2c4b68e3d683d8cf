"""Seed assets and seed sampling."""

import pytest

from mmat.programs.seeds import load_domains, load_seed_examples, make_seed, make_seeds
from mmat.signatures.queries import FileNeed
from mmat.tools import TOOL_NAMES

IMAGE_TOOLS = ["visualizer", "ocr", "objectlocation", "facedetection"]


def test_assets_are_valid_and_use_real_tools_and_domains():
    domains = load_domains()
    examples = load_seed_examples()
    assert len(domains) >= 16 and len({d.name for d in domains}) == len(domains)
    assert len(examples) >= 30
    names = {d.name for d in domains}
    assert {e.domain for e in examples} <= names
    for e in examples:
        assert e.tools and set(e.tools) <= set(TOOL_NAMES) - {"final_answer"}, e.query
        assert e.query.endswith(("?", ".")), e.query
    modalities = {f.modality for e in examples for f in e.files}
    assert modalities == {"image", "document", "table", "text", "code", "archive"}


def test_seed_is_a_function_of_its_index_not_of_the_run_size():
    tools = ["inspect_file_as_text", *IMAGE_TOOLS]
    assert make_seeds(3, tools=tools, rng_seed=7)[2] == make_seed(2, tools=tools, rng_seed=7)
    assert make_seeds(2, start=5, tools=tools)[0].index == 5
    assert make_seed(2, tools=tools, rng_seed=7) != make_seed(2, tools=tools, rng_seed=8)


def test_domains_cycle_and_examples_only_use_offered_tools():
    domains = load_domains()
    seeds = make_seeds(len(domains), tools=IMAGE_TOOLS, n_examples=3)
    assert {s.domain.name for s in seeds} == {d.name for d in domains}
    for s in seeds:
        assert s.examples, s.domain
        assert all(set(e.tools) <= set(IMAGE_TOOLS) for e in s.examples)
        same = [e.domain == s.domain.name for e in s.examples]
        assert same == sorted(same, reverse=True)  # examples from the seed's own domain come first


@pytest.mark.parametrize("hint", ["x" * 41])
def test_file_need_bounds(hint):
    with pytest.raises(ValueError):
        FileNeed(modality="image", content="a cat", name_hint=hint)
