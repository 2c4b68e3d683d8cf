"""`mmat eval` end to end: GTA- and GAIA-format files written here, scripted controllers, compare."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from mmat.cli import cli
from mmat.testing import DummyLM



@pytest.fixture
def gta_file(tmp_path):
    img = Image.new("RGB", (200, 80), "white")
    ImageDraw.Draw(img).text((20, 30), "TOTAL 950", fill="black")
    img.save(tmp_path / "receipt.png")
    item = {
        "tools": [{"name": "OCR", "description": "read text", "inputs": [], "outputs": []}],
        "files": [{"type": "image", "path": "receipt.png", "url": None}],
        "dialogs": [
            {"role": "user", "content": "What is the total on this receipt?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "OCR", "arguments": {"image": "receipt.png"}}}], "thought": "read it"},
            {"role": "tool", "name": "OCR", "content": "TOTAL 950"},
            {"role": "assistant", "content": "950"},
        ],
        "gt_answer": {"whitelist": [["950", "950.0"]], "blacklist": None},
    }
    subjective = {**item, "gt_answer": ["a nice receipt"]}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"0": item, "1": subjective, "2": {"tools": "broken"}}))
    return path


def controller(answer):
    def respond(messages, fields):
        if fields == ["answer"]:
            return {"answer": answer}
        return {"thought": "Read the receipt, then answer.", "code": f"print(ocr('receipt.png'))\nfinal_answer({answer!r})"}
    return respond


def test_eval_gta_scores_stores_and_compares(mmat_home, gta_file):
    DummyLM(controller("950"), name="good")
    DummyLM(controller("I do not know"), name="bad")
    runner = CliRunner()
    good = runner.invoke(cli, ["eval", "--bench", str(gta_file), "--controller", "dummy/good", "--json", "--quiet"])
    assert good.exit_code == 0, good.output
    metrics = json.loads(good.output[good.output.index("{"):])
    bad = runner.invoke(cli, ["eval", "--bench", str(gta_file), "--controller", "dummy/bad", "--json", "--quiet"])
    bad_metrics = json.loads(bad.output[bad.output.index("{"):])
    assert "skipped item 2" in good.output  # the malformed item is reported, the run goes on

    from mmat.config import load_settings
    from mmat.store import open_store

    with open_store(load_settings(), read_only=True) as store:
        items = store.sql("select item_key, counted, ans_acc, tool_recall, code_exec, traj_id from eval_items "
                          f"where eval_run_id = '{metrics['eval_run_id']}' order by item_key")
        # the subjective item counts under gta_official only (embedding similarity), as GTA's evaluator counts it
        assert [(i["item_key"], i["counted"]) for i in items] == [("0", True), ("1", True)]
        subjective = json.loads(items[1]["ans_acc"])
        assert set(subjective) == {"gta_official"} and 0.0 <= subjective["gta_official"] < 1.0
        assert json.loads(items[0]["ans_acc"])["gta"] == 1.0 and items[0]["tool_recall"] == 1.0 and items[0]["code_exec"] == 1.0
        run = store.sql(f"select r.kind, r.status, r.command from eval_runs e join runs r on r.run_id = e.run_id "
                        f"where e.eval_run_id = '{metrics['eval_run_id']}'")
        assert run == [{"kind": "eval", "status": "done",  # the command as typed (CliRunner's argv, not pytest's)
                        "command": f"mmat eval --bench {gta_file} --controller dummy/good --json --quiet"}]
        calls = store.sql(f"select task_id from lm_calls where run_id = '{metrics['eval_run_id']}'")
        assert calls and {c["task_id"] for c in calls} <= {f"eval:{metrics['eval_run_id']}:0", f"eval:{metrics['eval_run_id']}:1"}
        joined = store.sql(f"select count(*) as n from trajectories t join eval_items i on i.task_id = t.task_id "
                           f"and i.sample_idx = t.attempt where i.eval_run_id = '{metrics['eval_run_id']}'")
        assert joined == [{"n": 2}]
        steps = store.sql(f"select tool_calls from steps where traj_id = '{items[0]['traj_id']}'")
        assert steps[0]["tool_calls"][0]["name"] == "ocr" and "950" in steps[0]["tool_calls"][0]["result"]
    listed = json.loads(runner.invoke(cli, ["runs", "--json"]).output)
    assert {(r["run_id"], r["kind"], r["status"]) for r in listed} >= {
        (metrics["eval_run_id"], "eval", "done"), (bad_metrics["eval_run_id"], "eval", "done")}
    assert metrics["gta"]["embedding_model"].startswith(("all-mpnet-base-v2", "all-MiniLM-L6-v2 (GTA uses all-mpnet-base-v2"))
    official = next(t for t in metrics["tables"] if t["name"] == "gta_official")
    assert official["columns"] == ["P", "O", "L", "C", "AnsAcc", "AnsAcc w/ ImgGen"]
    assert official["values"][0] == pytest.approx(1.0, abs=1e-4)  # gold OCR once per item, ocr called once: P = R = 1

    compare = runner.invoke(cli, ["eval", "compare", metrics["eval_run_id"][:8], bad_metrics["eval_run_id"][:8]])
    assert compare.exit_code == 0, compare.output
    line = next(l for l in compare.output.splitlines() if "greedy.ans_acc.gta " in l)
    assert "-100.00" in line  # good 1.0 -> bad 0.0
    assert "dummy/good" in compare.output and "dummy/bad" in compare.output
    assert f"A = {metrics['eval_run_id']} vs B = {bad_metrics['eval_run_id']}" in compare.output
    as_json = runner.invoke(cli, ["eval", "compare", metrics["eval_run_id"], bad_metrics["eval_run_id"], "--json"])
    parsed = json.loads(as_json.output)
    assert parsed["a"]["controller"] == "dummy/good" and parsed["b"]["controller"] == "dummy/bad"
    assert {"key": "controller", "a": "dummy/good", "b": "dummy/bad"} in parsed["settings_diff"]


def test_eval_gaia_levels(mmat_home, tmp_path):
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"task_id": "a", "Question": "How many legs does a spider have?", "Level": 1, "Final answer": "8", "file_name": ""},
        {"task_id": "b", "Question": "Name the capital of France.", "Level": 2, "Final answer": "Paris", "file_name": ""},
    ]))
    DummyLM(lambda m, f: {"thought": "I know this.", "code": "final_answer('8')"}, name="eight")
    result = CliRunner().invoke(cli, ["eval", "--bench", str(tmp_path / "metadata.jsonl"), "--controller", "dummy/eight", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("AnsAcc (gaia)" in l and "50.00 (1/2)" in l for l in lines)
    assert "level 1: 1 items" in result.output and "level 2: 1 items" in result.output
    assert " ".join(result.output.split()).endswith(
        "greedy AnsAcc gaia 50.0%, gaia_lenient 50.0%, mat 50.0% on 2 counted items; CodeExec 100.0%; 0 errors")
    header = next(i for i, l in enumerate(lines) if "Level 1" in l and "Average" in l)  # the paper table
    assert [c.strip() for c in lines[header + 2].strip("│┃ ").split("│")] == ["100.00", "0.00", "–", "50.00"]
    assert result.output.count("greedy AnsAcc gaia") == 1


def _agentx_judge(messages, fields):
    return {"justification": "fine", "score": 0.5}


def test_eval_agentx_both_formats_with_a_judge(mmat_home, tmp_path):
    from tests.eval.test_agentx import write_mp4

    files = tmp_path / "files"
    files.mkdir()
    Image.new("RGB", (40, 30), "blue").save(files / "AgentX_1.jpg", format="PNG")  # PNG bytes under .jpg
    write_mp4(files / "AgentX_2.mp4")
    step = {"step": 1, "task": "describe", "tool": "SceneDescriber", "input": {"image": "AgentX_1.jpg"}, "output": "blue", "thought": "look"}
    entry = lambda fp, qt: [{"file_path": fp, "query": "What colour is it?", "query_type": qt, "tool_metadata": {},
                             "reasoning_steps": [step], "final_answer": {"value": "blue", "justification": "it is blue"}}]
    (tmp_path / "data.json").write_text(json.dumps({"0": entry("AgentX_1.jpg", "objective"), "1": entry("AgentX_2.mp4", "subjective")}))
    (tmp_path / "generative.txt").write_text("1\n")
    turn = [{"type": "text", "text": "What colour is it?"}, {"type": "image", "image": "image/AgentX_1.jpg"}]
    gta_item = {"tools": [{"name": "OCR"}], "files": [], "gt_answer": {"whitelist": [["blue"]], "blacklist": None},
                "dialogs": [{"role": "user", "content": turn},
                            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "ImageDescription", "arguments": {}}}]},
                            {"role": "tool", "name": "ImageDescription", "content": "blue"}, {"role": "assistant", "content": "blue"}]}
    (tmp_path / "dataset.json").write_text(json.dumps({"0": gta_item}))
    DummyLM(lambda m, f: {"answer": "blue"} if f == ["answer"] else {"thought": "Answer.", "code": "final_answer('blue')"}, name="ax")
    DummyLM(_agentx_judge, name="axjudge")
    runner = CliRunner()
    data = runner.invoke(cli, ["eval", "--bench", str(tmp_path / "data.json"), "--generative-ids", str(tmp_path / "generative.txt"),
                               "--controller", "dummy/ax", "--judge", "dummy/axjudge", "--json", "--quiet"])
    assert data.exit_code == 0, data.output
    out = json.loads(data.output[data.output.index("{"):])
    table = out["tables"][0]
    assert table["columns"][:10] == ["G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "G_a*", "T^s_acc"]
    assert table["values"][0] == 0.5 and table["values"][8] == pytest.approx(0.5)  # G_a* over item 1
    assert table["values"][10] == 0.0  # set F1: the agent called no tool
    assert out["agentx"]["n_generative"] == 1 and out["agentx"]["metrics"]["G_acc"]["n"] == 1
    text = runner.invoke(cli, ["eval", "--bench", str(tmp_path / "dataset.json"), "--format", "agentx",
                               "--controller", "dummy/ax", "--judge", "dummy/axjudge", "--quiet"])
    assert text.exit_code == 0, text.output
    assert "Agent-X (as MATRIX reports it)" in text.output and "G_a*: no image-answer items" in " ".join(text.output.split())

    from mmat.config import load_settings
    from mmat.store import open_store

    with open_store(load_settings(), read_only=True) as store:
        judged = store.sql("select count(*) as n from lm_calls where run_id = ? and module like '%agentx_judge%'", [out["eval_run_id"]])
        assert judged[0]["n"] == 9 + 8  # nine metrics on the text item, G_acc skipped on the image-answer item
        media = store.sql("select details from eval_items where eval_run_id = ? order by item_key", [out["eval_run_id"]])
        assert "holds PNG bytes" in media[0]["details"] and "frame(s) at 0 s" in media[1]["details"]


def test_eval_action_grammar_flag_is_a_setting_of_the_run(mmat_home, tmp_path):
    (tmp_path / "metadata.jsonl").write_text(json.dumps(
        {"task_id": "a", "Question": "How many legs does a spider have?", "Level": 1, "Final answer": "8", "file_name": ""}))
    DummyLM(lambda m, f: {"thought": "I know this.", "code": "final_answer('8')"}, name="grammar")
    runs = {}
    for mode in ("off", "on"):
        result = CliRunner().invoke(cli, ["eval", "--bench", str(tmp_path / "metadata.jsonl"), "--controller", "dummy/grammar",
                                          "--action-grammar", mode, "--json", "--quiet"])
        assert result.exit_code == 0, result.output
        runs[mode] = json.loads(result.output[result.output.index("{"):])["eval_run_id"]
    assert runs["off"] != runs["on"]  # a different setting is a different run

    from mmat.config import load_settings
    from mmat.store import open_store

    with open_store(load_settings(), read_only=True) as store:
        for mode, run_id in runs.items():
            settings = json.loads(store.sql("select settings from runs where run_id = ?", [run_id])[0]["settings"])
            assert settings["agent_action_grammar"] == mode
