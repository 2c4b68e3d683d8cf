"""CodeAgent: the loop (errors as observations, tolerance, fallback), tools and images, and the
conversation rebuilt from its steps, compared with what the model actually received."""

import pytest
from PIL import Image

from mmat.programs import CodeAgent, GeneratedFile, trajectory_conversation
from mmat.programs.agent import UNREADABLE_REPLY
from mmat.sandbox import Limits
from mmat.testing import DummyLM

FAST = Limits(wall_s=20)


@pytest.fixture
def files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (24, 16), "red").save(src / "flag.png")
    (src / "march.csv").write_text("category,amount\nrent,950\nfood,412.5\n")
    return [
        GeneratedFile(name="flag.png", path=src / "flag.png", modality="image", mime="image/png", source="pool", caption="a red flag"),
        GeneratedFile(name="march.csv", path=src / "march.csv", modality="table", mime="text/csv", source="generated"),
    ]


def agent(settings, **kw):
    kw.setdefault("limits", FAST)
    return CodeAgent(kw.pop("tools", ["inspect_file_as_text"]), settings=settings, **kw)


def step(thought, code):
    return {"thought": thought, "code": code}


def test_errors_become_observations_and_the_answer_ends_the_run(settings, files, tmp_path, use_lm):
    dm = DummyLM([step("Sum the amounts.", "total = sum(amounts)"),
                  step("Read the file first.", "import csv\nrows = list(csv.DictReader(open('march.csv')))\nprint(len(rows))"),
                  step("Answer.", "final_answer(sum(float(r['amount']) for r in rows))")], name="agent1")
    with use_lm("dummy/agent1"):
        traj = agent(settings)("What did March cost?", files, tmp_path / "ws")
    assert traj.status == "answered" and traj.answer == "1362.5" and traj.n_errors == 1
    first, second, last = traj.steps
    assert first.error == "NameError: name 'amounts' is not defined"
    assert "NameError" in first.observation and "Traceback" in first.observation
    assert second.error is None and second.observation == "Output:\n2"
    assert last.final_answer == "1362.5"
    # the error reached the model in the next turn
    assert "NameError: name 'amounts' is not defined" in dm.calls[1].messages[-1]["content"]
    assert (tmp_path / "ws" / "march.csv").exists()


def test_consecutive_errors_beyond_tolerance_stop_with_a_fallback_answer(settings, files, tmp_path, use_lm):
    def respond(messages, fields):
        return {"answer": "unknown"} if fields == ["answer"] else step("Try.", "1/0")

    dm = DummyLM(respond, name="agent2")
    with use_lm("dummy/agent2"):
        traj = agent(settings, error_tolerance=2, max_steps=8)("What did March cost?", files, tmp_path / "ws")
    assert traj.status == "error_limit" and len(traj.steps) == 3 and traj.n_errors == 3
    assert traj.answer == "unknown"
    fallback_prompt = dm.calls[-1].messages[-1]["content"]
    assert "Step 3\nThought: Try." in fallback_prompt and "ZeroDivisionError" in fallback_prompt


def test_steps_run_out_into_the_fallback_answer(settings, files, tmp_path, use_lm):
    DummyLM([step("Look.", "print('rent')"), step("Look again.", "print('food')"), {"answer": "rent"}], name="agent3")
    with use_lm("dummy/agent3"):
        traj = agent(settings, max_steps=2)("Which category is largest?", files, tmp_path / "ws")
    assert traj.status == "fallback" and traj.answer == "rent" and traj.n_errors == 0 and len(traj.steps) == 2


def test_an_unreadable_reply_is_an_error_the_model_is_told_about(settings, files, tmp_path, use_lm):
    replies = iter([{"thought": "only a thought"}, {"thought": "only a thought"}, step("Answer.", "final_answer('rent')")])
    dm = DummyLM(lambda messages: next(replies), name="agent4")
    with use_lm("dummy/agent4"):
        traj = agent(settings)("Which category is largest?", files, tmp_path / "ws")
    assert traj.status == "answered" and traj.n_errors == 1
    assert traj.steps[0].error.startswith("ModelOutputError") and traj.steps[0].observation == UNREADABLE_REPLY
    assert UNREADABLE_REPLY in dm.calls[-1].messages[-1]["content"]


def test_tool_results_are_part_of_the_observation(settings, files, tmp_path, use_lm):
    DummyLM([step("Read it.", "text = inspect_file_as_text(file_path='march.csv')"),
             step("Answer.", "final_answer('rent')")], name="agent5")
    with use_lm("dummy/agent5"):
        traj = agent(settings)("Which category is largest?", files, tmp_path / "ws")
    [call] = traj.steps[0].tool_calls
    assert call.name == "inspect_file_as_text" and call.arguments == {"file_path": "march.csv"}
    assert "inspect_file_as_text(file_path='march.csv') returned:" in traj.steps[0].observation
    assert "rent" in traj.steps[0].observation


def image_urls(message):
    content = message["content"]
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"] if isinstance(content, list) else []


def test_multimodal_agent_sees_task_images_first_and_step_images_later(settings, files, tmp_path, use_lm):
    dm = DummyLM([step("Make it gray.", "from PIL import Image\nImage.open('flag.png').convert('L').save('gray.png')"),
                  step("Done.", "final_answer('gray.png')")], name="agent6")
    with use_lm("dummy/agent6"):
        traj = agent(settings, multimodal=True)("Make the flag gray.", files, tmp_path / "ws")
    assert traj.multimodal and traj.steps[0].images == [str((tmp_path / "ws.images" / "step0" / "gray.png").resolve())]
    first_turn, second_turn = dm.calls[0].messages[1], dm.calls[1].messages[-1]
    assert len(image_urls(first_turn)) == 1 and len(image_urls(second_turn)) == 1
    assert "New files: gray.png" in "".join(p.get("text", "") for p in second_turn["content"])


def test_text_only_agent_gets_no_image_parts(settings, files, tmp_path, use_lm):
    dm = DummyLM([step("Answer.", "final_answer('red')")], name="agent7")
    with use_lm("dummy/agent7"):
        traj = agent(settings)("What color is the flag?", files, tmp_path / "ws")
    assert not traj.multimodal and isinstance(dm.calls[0].messages[1]["content"], str)
    assert "- flag.png (image)\n- march.csv (table)" in dm.calls[0].messages[1]["content"]


@pytest.mark.parametrize("adapter_name", ["chat", "json"])
def test_rebuilt_conversation_is_exactly_what_the_model_received(settings, files, tmp_path, use_lm, adapter_name):
    import dspy

    adapter = dspy.ChatAdapter() if adapter_name == "chat" else dspy.JSONAdapter()
    dm = DummyLM([step("Look at the data.", "print(open('march.csv').read())"),
                  step("Draw a chart.", "from PIL import Image\nImage.new('RGB', (8, 8), 'blue').save('chart.png')\nprint('saved')"),
                  step("Oops.", "undefined_name"),
                  step("Answer.", "final_answer('rent')")], name=f"agent8{adapter_name}")
    with use_lm(dm.model, adapter=adapter):
        a = agent(settings, multimodal=True)
        traj = a("Which category is largest?", files, tmp_path / "ws")
    assert traj.status == "answered" and len(dm.calls) == 4
    sent = [c.messages for c in dm.calls]
    for earlier, later in zip(sent, sent[1:]):
        assert later[: len(earlier)] == earlier  # every step's prompt extends the previous one
    ws = (tmp_path / "ws").resolve()
    staged = [f.model_copy(update={"path": ws / f.name}) for f in files]
    exact = trajectory_conversation("Which category is largest?", staged, traj.steps, a.tools, adapter,
                                    multimodal=True, inline_images=True)
    reply = adapter.format_assistant_message_content(a.step.signature, {"thought": "Answer.", "code": "final_answer('rent')"})
    assert exact == [*sent[-1], {"role": "assistant", "content": reply}]
    # for training data the images are file paths, in order
    by_path = trajectory_conversation("Which category is largest?", staged, traj.steps, a.tools, adapter)
    urls = [u for m in by_path for u in image_urls(m)]
    assert urls == [str(ws / "flag.png"), str(ws.parent / "ws.images" / "step1" / "chart.png")]  # step images: the copies
    assert [m["role"] for m in by_path] == ["system", "user", "assistant", "user", "assistant", "user", "assistant",
                                            "user", "assistant"]
