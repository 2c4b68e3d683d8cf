"""`mmat import`: mmat's own exports round-trip to identical training samples; MM-Traj, M-TRACE, Pref-X and GTA
files (written here in their released layouts) land as origin='import' rows that sql, export and finetune use."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from mmat.cli import cli
from mmat.config import load_settings
from mmat.errors import ConfigError
from mmat.pipeline.exports import run_export
from mmat.pipeline.importers import run_import
from mmat.store import Store
from mmat.testing.trajectory_store import build_export_store

MODEL = "dummy/agent"
MAT_SYSTEM = ("You are an expert assistant who can solve any task using code blobs.\nYou have access to these tools:\n"
              "- visualizer: A tool that can answer questions about attached images.\n"
              "- web_search: Search the web.\n- teleport: An in-house tool.\n- final_answer: Provides a final answer.\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mmat.testing.tiny_models import build_tiny_idefics3, build_tiny_text_lm

    root = tmp_path_factory.mktemp("tiny")
    return {"vlm": build_tiny_idefics3(root / "vlm"), "text": build_tiny_text_lm(root / "text")}


def _home(path, monkeypatch):
    monkeypatch.setenv("MMAT_HOME", str(path))
    return load_settings()


def _samples(codec, pairs=False):
    """mmat's own training samples (default selection, or every pair), in a stable order."""
    from mmat.pipeline.training_data import load_conversations, load_preference_rows

    with Store.for_settings(load_settings(), read_only=True) as store:
        if pairs:
            rows, _ = load_preference_rows(store, model=MODEL)
            msgs = [r.prompt + [{"role": "assistant", "content": r.chosen}] for r in rows]
            keys = [r.meta["pair_id"] for r in rows]
        else:
            rows, _ = load_conversations(store, model=MODEL)
            msgs, keys = [c.messages for c in rows], [c.meta["traj_id"] for c in rows]
    out = {}
    for key, m in zip(keys, msgs):
        s, _ = codec.encode(codec.row(m), max_length=1 << 20)
        out[key] = (s.input_ids, s.labels, [im.tobytes() for im in s.images])
    return out


def _codec(path):
    from mmat.finetune.data import ChatCodec
    from mmat.finetune.models import load_base

    return ChatCodec(load_base(str(path))[1])


# --- round trip -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["llamafactory", "parquet", "hf"])
def test_round_trip_of_an_mmat_export_gives_identical_training_samples(tmp_path, monkeypatch, tiny, fmt):
    codec = _codec(tiny["vlm"])
    _home(tmp_path / "a", monkeypatch)
    store = Store.for_settings(load_settings())
    ids = build_export_store(store, tmp_path / "scratch")
    store.close()
    before, before_pairs = _samples(codec), _samples(codec, pairs=True)
    out = tmp_path / "export"
    run_export(load_settings(), fmt, out, model=MODEL)
    run_export(load_settings(), fmt, out, model=MODEL, pairs=True)
    shutil.move(str(out), str(tmp_path / "moved"))  # the folder travels; the source store is not needed

    settings = _home(tmp_path / "b", monkeypatch)
    report = run_import(settings, "mmat", tmp_path / "moved")
    assert (report.trajectories, report.pairs, report.bad) == (3, 1, [])  # the pair's context is an SFT trajectory too
    assert _samples(codec) == before and set(before) == ids.selected
    assert _samples(codec, pairs=True) == before_pairs
    with Store.for_settings(settings, read_only=True) as store:
        rows = store.sql("SELECT DISTINCT origin, source FROM trajectories")
        labels = store.sql("SELECT count(*) AS n FROM verdicts WHERE verifier = 'label'")[0]["n"]
    assert rows == [{"origin": "import", "source": str((tmp_path / "moved").resolve())}] and labels == 1  # the exported one

    again = run_import(settings, "mmat", tmp_path / "moved")
    assert (again.trajectories, again.pairs, again.already) == (0, 0, 4)


def test_importing_an_export_into_its_own_store_adds_nothing(tmp_path, monkeypatch):
    settings = _home(tmp_path / "a", monkeypatch)
    store = Store.for_settings(settings)
    build_export_store(store, tmp_path / "scratch")
    store.close()
    run_export(settings, "swift", tmp_path / "out", model=MODEL)
    with Store.for_settings(settings, read_only=True) as store:
        counts = {t: store.sql(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in ("tasks", "trajectories", "steps", "files")}
    report = run_import(settings, "mmat", tmp_path / "out")
    assert report.trajectories == 0 and report.already == 3
    with Store.for_settings(settings, read_only=True) as store:
        assert {t: store.sql(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in counts} == counts
        assert store.sql("SELECT count(*) AS n FROM trajectories WHERE origin = 'import'")[0]["n"] == 0


# --- released layouts -----------------------------------------------------------------------------------------
@pytest.fixture
def release(tmp_path):
    root = tmp_path / "release"
    (root / "files").mkdir(parents=True)
    Image.new("RGB", (12, 9), (220, 30, 30)).save(root / "files" / "a.png")
    Image.new("RGB", (9, 12), (30, 70, 220)).save(root / "files" / "b.png")
    Image.new("RGB", (6, 6), (30, 200, 60)).save(root / "files" / "crop.png")
    return root


def _mmtraj_rows():
    good = {"id": "0", "image": {"<image_00>": "files/a.png", "<image_01>": "files/b.png"}, "conversations": [
        {"role": "system", "content": MAT_SYSTEM},
        {"role": "user", "content": "<image_00>\n<image_01>\nTask: Which of the two images is red?\nAttachment: files/a.png; files/b.png"},
        {"role": "assistant", "content": "Thought: Ask the visualizer.\nCode:\n```py\nprint(visualizer(question='Which is red?', image_path='a.png'))\n```<end_action>"},
        {"role": "user", "content": "[OUTPUT OF STEP 0] -> Observation:\nPrint outputs:\nthe first one is red"},
        {"role": "assistant", "content": "Thought: Check on the web, then answer.\nCode:\n```py\nweb_search(query='red')\nteleport(to='x')\nfinal_answer('a.png')\n```<end_action>"},
    ]}
    no_answer = {"id": "1", "image": "files/a.png", "conversations": [
        {"role": "user", "content": "<image>\nTask: Describe it."},
        {"role": "assistant", "content": "Thought: Look.\nCode:\n```py\nprint(visualizer(question='?', image_path='a.png'))\n```"}]}
    missing = {"id": "2", "image": "files/nope.png", "conversations": [
        {"role": "user", "content": "<image>\nTask: Describe it."},
        {"role": "assistant", "content": "Thought: Done.\nCode:\n```py\nfinal_answer('x')\n```"}]}
    text_only = {"id": "3", "conversations": [
        {"role": "user", "content": "Task: What is 6 times 7?"},
        {"role": "assistant", "content": "Thought: Compute.\nCode:\n```py\nfinal_answer(6 * 7)\n```<end_action>"}]}
    return [good, no_answer, missing, "not a row", text_only]


def test_mmtraj_rows_land_with_tools_mapped_images_in_blobs_and_bad_rows_reported(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    path = release / "mm_traj.json"
    path.write_text(json.dumps(_mmtraj_rows()))
    result = CliRunner().invoke(cli, ["import", "mmtraj", str(path)])
    assert result.exit_code == 0, result.output
    assert "imported 2 trajectories, 0 pair(s) from 5 row(s) (0 already in the store, 3 bad" in result.output
    assert "bad row 1: no answer: the last step does not call final_answer(...)" in result.output
    assert "bad row 2: image files/nope.png not found" in result.output
    assert "bad row 3: a str, not an object" in result.output
    assert "tools renamed: web_search->ask_search_agent" in result.output
    assert "unknown tools kept (not in mmat, left out of prompts): teleport (1)" in result.output
    with Store.for_settings(settings, read_only=True) as store:
        [t] = store.sql("SELECT t.*, k.query FROM trajectories t JOIN tasks k USING (task_id) WHERE t.multimodal")
        steps = store.sql("SELECT * FROM steps WHERE traj_id = ? ORDER BY idx", [t["traj_id"]])
        files = store.sql("SELECT name, path, modality FROM files WHERE task_id = ? ORDER BY position", [t["task_id"]])
        blob = store.blob_path(files[0]["path"])
    assert t["origin"] == "import" and t["source"] == str(path.resolve()) and t["verdict"] is None
    assert t["query"] == "Which of the two images is red?" and t["answer"] == "a.png"
    assert t["tools"] == ["visualizer", "ask_search_agent", "teleport"]
    assert [f["name"] for f in files] == ["a.png", "b.png"] and blob.is_file() and Image.open(blob).size == (12, 9)
    assert steps[0]["observation"] == "Print outputs:\nthe first one is red"
    assert "ask_search_agent(query='red')" in steps[1]["code"] and "web_search" not in steps[1]["code"]
    assert [c["name"] for c in steps[0]["tool_calls"]] == ["visualizer"]

    again = CliRunner().invoke(cli, ["import", "mmtraj", str(path)])
    assert "imported 0 trajectories, 0 pair(s) from 5 row(s) (2 already in the store, 3 bad" in again.output


def test_mtrace_sharegpt_with_an_image_produced_by_a_step(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    row = {"images": ["files/a.png", "files/crop.png"], "system": MAT_SYSTEM, "conversations": [
        {"from": "human", "value": "<image>\nTask: Crop the red image and say its colour."},
        {"from": "gpt", "value": "Thought: Crop it.\nCode:\n```py\nprint(image_edit(prompt='crop', image_path='a.png'))\n```<end_action>"},
        {"from": "human", "value": "[OUTPUT OF STEP 0] Observation:\n<image>\ncrop.png"},
        {"from": "gpt", "value": "Thought: It is red.\nCode:\n```py\nfinal_answer('red')\n```<end_action>"}]}
    no_placeholders = {"images": ["files/b.png"], "conversations": [
        {"from": "human", "value": "Task: What colour is it?"},
        {"from": "gpt", "value": "Thought: Blue.\nCode:\n```py\nfinal_answer('blue')\n```<end_action>"}]}
    (release / "m_trace.json").write_text(json.dumps([row, no_placeholders]))
    report = run_import(settings, "mtrace", release / "m_trace.json")
    assert report.trajectories == 2 and report.bad == []
    with Store.for_settings(settings, read_only=True) as store:
        steps = store.sql("SELECT s.images, s.observation FROM steps s JOIN trajectories t USING (traj_id) "
                          "WHERE t.n_steps = 2 ORDER BY idx")
        blob = store.blob_path(steps[0]["images"][0])
        [alone] = store.sql("SELECT f.name FROM files f JOIN tasks k USING (task_id) WHERE k.query = 'What colour is it?'")
    assert steps[0]["observation"] == "crop.png" and Image.open(blob).size == (6, 6) and steps[1]["images"] == []
    assert alone["name"] == "b.png"  # images without placeholders go with the task


def test_prefx_pairs_become_step_pairs_with_their_context(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    base = {"images": ["files/a.png"], "system": MAT_SYSTEM, "conversations": [
        {"from": "human", "value": "<image>\nTask: What colour is the image?"},
        {"from": "gpt", "value": "Thought: Ask.\nCode:\n```py\nprint(visualizer(question='colour?', image_path='a.png'))\n```<end_action>"},
        {"from": "human", "value": "[OUTPUT OF STEP 0] Observation:\nred"}],
        "chosen": {"from": "gpt", "value": "Thought: Red.\nCode:\n```py\nfinal_answer('red')\n```<end_action>", "observation": "red"},
        "rejected": {"from": "gpt", "value": "Thought: Guess.\nCode:\n```py\nfinal_answer(1/0)\n```<end_action>",
                     "observation": "Error: division by zero"}}
    other = json.loads(json.dumps(base))
    other["rejected"]["value"] = "Thought: Blue.\nCode:\n```py\nfinal_answer('blue')\n```<end_action>"
    (release / "pref_x.json").write_text(json.dumps([base, other, {"conversations": base["conversations"]}]))
    report = run_import(settings, "prefx", release / "pref_x.json")
    assert (report.pairs, report.trajectories) == (2, 0) and report.bad == [(2, "no 'chosen' and 'rejected' (is this a "
                                                                               "Pref-X file? use mtrace for SFT data)")]
    from mmat.pipeline.training_data import load_preference_rows

    with Store.for_settings(settings, read_only=True) as store:
        assert store.sql("SELECT count(*) AS n FROM trajectories")[0]["n"] == 1  # both pairs share one context
        pairs, _ = load_preference_rows(store, model=MODEL)
        [p] = store.sql("SELECT rejected FROM preference_pairs WHERE rejected LIKE '%1/0%'")
    assert {json.loads(p["rejected"])["error"]} == {"division by zero"}
    assert all(r.prompt[-1]["role"] == "user" and "red" in r.prompt[-1]["content"] for r in pairs)
    assert sorted("final_answer('red')" in r.chosen for r in pairs) == [True, True]


def test_gta_dialogs_are_reference_trajectories_outside_the_training_selection(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    item = {"tools": [{"name": "OCR"}, {"name": "Calculator"}], "files": [{"type": "image", "path": "files/a.png"}],
            "dialogs": [{"role": "user", "content": "What is the sum of the two numbers in the image?"},
                        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "OCR", "arguments": {"image": "files/a.png"}}}]},
                        {"role": "tool", "name": "OCR", "content": {"type": "text", "content": "12 and 30"}},
                        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "Calculator", "arguments": {"expression": "12+30"}}}]},
                        {"role": "tool", "name": "Calculator", "content": {"type": "text", "content": "42"}},
                        {"role": "assistant", "content": "42"}],
            "gt_answer": {"whitelist": [["42"]], "blacklist": None}}
    (release / "dataset.json").write_text(json.dumps({"0": item, "1": {"dialogs": "?"}}))
    report = run_import(settings, "gta", release / "dataset.json")
    assert report.trajectories == 1 and report.bad == [("1", "no 'dialogs' list (is this a GTA dataset.json?)")]
    with Store.for_settings(settings, read_only=True) as store:
        steps = store.sql("SELECT code, observation FROM steps ORDER BY idx")
        [task] = store.sql("SELECT split, query FROM tasks")
        from mmat.pipeline.training_data import load_conversations

        assert load_conversations(store, model=MODEL)[0] == []  # benchmark items never train by default
    assert [s["code"] for s in steps] == ["print(ocr(image_path='a.png'))", "print(12+30)", "final_answer('42')"]
    assert steps[0]["observation"] == "12 and 30" and task["split"] == "eval"


def test_a_file_of_another_format_is_refused_or_every_row_reported(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    (release / "dataset.json").write_text(json.dumps({"0": {"dialogs": []}}))
    with pytest.raises(ConfigError, match="holds no list of rows: is it a mmtraj file"):
        run_import(settings, "mmtraj", release / "dataset.json")
    (release / "rows.json").write_text(json.dumps(_mmtraj_rows()[:1]))
    with pytest.raises(ConfigError, match="is not a GTA dataset.json"):
        run_import(settings, "gta", release / "rows.json")
    report = run_import(settings, "prefx", release / "rows.json")
    assert report.pairs == 0 and len(report.bad) == 1


# --- imported rows in sql, export and finetune ---------------------------------------------------------------
def test_sql_export_and_finetune_work_on_imported_rows(tmp_path, monkeypatch, release, tiny):
    _home(tmp_path / "home", monkeypatch)
    (release / "mm_traj.json").write_text(json.dumps(_mmtraj_rows()))
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "mmtraj", str(release / "mm_traj.json")]).exit_code == 0
    sql = runner.invoke(cli, ["sql", "select origin, count(*) as n from trajectories group by 1", "--json"])
    assert json.loads(sql.output) == [{"origin": "import", "n": 2}]
    where = "t.origin = 'import'"
    exported = runner.invoke(cli, ["export", "llamafactory", "--out", str(tmp_path / "lf"), "--where", where, "--model", MODEL])
    assert exported.exit_code == 0, exported.output
    rows = json.loads((tmp_path / "lf" / "mmat_sft.json").read_text())
    first = next(r for r in rows if r["images"])
    assert len(first["images"]) == 2 and "teleport" not in first["messages"][0]["content"]
    assert "ask_search_agent(query: str)" in first["messages"][0]["content"]  # mmat's tool list, as at inference
    out = tmp_path / "adapter"
    tuned = runner.invoke(cli, ["finetune", "sft", "--model", str(tiny["text"]), "--out", str(out), "--where", where,
                                "--max-steps", "1", "--max-length", "4096", "--batch-size", "1"])
    assert tuned.exit_code == 0, tuned.output
    assert "sft: 2 samples, 1 steps" in tuned.output and (out / "adapter_config.json").is_file()
    assert os.path.isfile(out / "mmat_train.json")


def test_imported_trajectories_are_valid_input_for_mmat_verify(tmp_path, monkeypatch, release):
    settings = _home(tmp_path / "home", monkeypatch)
    (release / "mm_traj.json").write_text(json.dumps(_mmtraj_rows()))
    run_import(settings, "mmtraj", release / "mm_traj.json")
    result = CliRunner().invoke(cli, ["verify", "--where", "t.origin = 'import'", "--rules-only", "--quiet"])
    assert result.exit_code == 0, result.output
    with Store.for_settings(settings, read_only=True) as store:
        rows = store.sql("SELECT v.subject_id, v.passed FROM verdicts v JOIN trajectories t ON t.traj_id = v.subject_id "
                         "WHERE v.verifier = 'rules' AND t.origin = 'import'")
    assert len(rows) == 2  # one rules verdict per imported trajectory; rules alone never make one training data
