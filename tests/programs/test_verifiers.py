"""QueryFileVerifier and TrajectoryVerifier: what they show the model, typed verdicts."""

import litellm
import pytest

from mmat.errors import ModelOutputError
from mmat.programs import AgentStep, GeneratedFile, QueryFileVerifier, Trajectory, TrajectoryVerifier
from mmat.testing import DummyLM


@pytest.fixture
def files(small_pool, tmp_path):
    astronaut = small_pool.search("a person in a space suit")[0]
    photo = astronaut.save(tmp_path / "crew.png")
    table = tmp_path / "march.csv"
    table.write_text("category,amount\nrent,950\nfood,412.5\n")
    return [
        GeneratedFile(name="crew.png", path=photo, modality="image", mime="image/png", source="pool", caption=astronaut.caption),
        GeneratedFile(name="march.csv", path=table, modality="table", mime="text/csv", source="generated", caption="expenses"),
    ]


def parts(message):
    content = message["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def text_of(message):
    return "".join(p.get("text", "") for p in parts(message))


def image_urls(message):
    return [p["image_url"]["url"] for p in parts(message) if p["type"] == "image_url"]


def test_text_only_verifier_reads_captions_and_document_markdown(files, use_lm):
    dm = DummyLM([{"reasons": ["files match"], "passed": True, "rewritten_query": "None"}], name="qfv1")
    with use_lm("dummy/qfv1"):
        verdict = QueryFileVerifier()("How much was rent?", ["inspect_file_as_text"], files)
    assert verdict.passed and verdict.reasons == ["files match"] and verdict.rewritten_query is None
    user = dm.calls[0].messages[-1]
    assert image_urls(user) == []
    assert "Image description: " + files[0].caption in text_of(user)
    assert "| rent | 950 |" in text_of(user).replace("950.0", "950")


def test_multimodal_verifier_sees_the_images(files, use_lm):
    dm = DummyLM([{"reasons": ["ok"], "passed": True, "rewritten_query": "Who is in the photo and how much was rent?"}], name="qfv2")
    with use_lm("dummy/qfv2"):
        verdict = QueryFileVerifier(multimodal=True)("How much was rent?", ["inspect_file_as_text"], files)
    assert verdict.rewritten_query == "Who is in the photo and how much was rent?"
    user = dm.calls[0].messages[-1]
    [url] = image_urls(user)
    assert url.startswith("data:image/png;base64,")
    assert "crew.png:" in text_of(user) and "Shown in images." in text_of(user)


def test_vision_support_is_read_from_litellm(files, use_lm):
    litellm.register_model({"dummy/vision-verifier": {"supports_vision": True, "litellm_provider": "dummy", "mode": "chat"}})
    dm = DummyLM([{"reasons": ["ok"], "passed": False, "rewritten_query": "ignored when failing"}], name="vision-verifier")
    with use_lm("dummy/vision-verifier"):
        verdict = QueryFileVerifier()("How much was rent?", ["inspect_file_as_text"], files)
    assert len(image_urls(dm.calls[0].messages[-1])) == 1
    assert not verdict.passed and verdict.rewritten_query is None


def trajectory(answer="950"):
    steps = [AgentStep(idx=0, thought="Read the table.", code="print(open('march.csv').read())", observation="Output:\nrent,950"),
             AgentStep(idx=1, thought="Answer.", code="final_answer('950')", observation="Final answer given: 950", final_answer="950")]
    return Trajectory(steps=steps, answer=answer, status="answered", n_errors=0)


def test_trajectory_verifier_sees_steps_and_expected_answer(files, use_lm):
    dm = DummyLM([{"reasons": ["answer matches"], "verdict": "correct", "score": 1.7}], name="tv1")
    with use_lm("dummy/tv1"):
        verdict = TrajectoryVerifier()("How much was rent?", files, trajectory(), expected_answer="950")
    assert verdict.passed and verdict.verdict == "correct" and verdict.score == 1.0
    prompt = text_of(dm.calls[0].messages[-1])
    assert "Step 2\nThought: Answer." in prompt and "[[ ## expected_answer ## ]]\n950" in prompt
    assert "[[ ## answer ## ]]\n950" in prompt


def test_trajectory_verifier_without_expected_answer_or_answer(files, use_lm):
    dm = DummyLM([{"reasons": ["no answer"], "verdict": "incorrect", "score": 0.1}], name="tv2")
    with use_lm("dummy/tv2"):
        verdict = TrajectoryVerifier()("How much was rent?", files, trajectory(answer=None))
    assert not verdict.passed and verdict.verdict == "incorrect"
    prompt = text_of(dm.calls[0].messages[-1])
    assert "expected_answer" not in prompt and "(no answer)" in prompt


def test_unknown_verdict_is_a_model_output_error(files, use_lm):
    DummyLM([{"reasons": [], "verdict": "maybe", "score": 0.5}], name="tv3", cycle=True)
    with use_lm("dummy/tv3"), pytest.raises(ModelOutputError, match="trajectory verification"):
        TrajectoryVerifier()("q?", files, trajectory())
