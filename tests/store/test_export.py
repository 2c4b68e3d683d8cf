"""`mmat export`: one selection for every format, each consumer's documented layout, portable folders, a card.

The store holds a task with two images whose trajectory produces a third image in a step, a text-only
task, verdicts overruled by human labels both ways, and a step preference pair (mmat.testing.trajectory_store).
"""

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
from mmat.store import Store
from mmat.store.export import IMAGE_TOKEN, EXPORT_FORMATS
from mmat.testing.trajectory_store import build_export_store

MODEL = "dummy/agent"  # ChatAdapter prompts, as the scripted controller saw them


@pytest.fixture
def ids(mmat_home, tmp_path):
    store = Store.for_settings(load_settings())
    try:
        return build_export_store(store, tmp_path / "scratch")
    finally:
        store.close()


def export(fmt, out, **kw):
    return run_export(load_settings(), fmt, out, model=MODEL, **kw)


def records(out, pairs=False):
    name = "mmat_pairs.jsonl" if pairs else "mmat_trajectories.jsonl"
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


# --- selection ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_selects_what_finetune_trains_on(ids, tmp_path, fmt):
    from mmat.pipeline.training_data import DEFAULT_SFT_WHERE, TRAINING_SELECTION, load_conversations

    out = tmp_path / fmt
    result = CliRunner().invoke(cli, ["export", fmt, "--out", str(out), "--model", MODEL])
    assert result.exit_code == 0, result.output
    assert "selected 3 trajectories (default: verified correct and not labelled incorrect, or labelled correct)" in result.output
    if fmt == "parquet":
        import pyarrow.parquet as pq

        exported = set(pq.read_table(out / "trajectories.parquet").column("traj_id").to_pylist())
    else:
        exported = {r["traj_id"] for r in records(out)}
    # labelled incorrect is out although verified; labelled correct is in although the verifier said no
    assert exported == ids.selected
    assert DEFAULT_SFT_WHERE == TRAINING_SELECTION
    with Store.for_settings(load_settings(), read_only=True) as store:
        trained, _ = load_conversations(store, model=MODEL)
    assert {c.meta["traj_id"] for c in trained} == ids.selected


def test_newer_verdicts_from_mmat_verify_count(ids, tmp_path):
    from datetime import timedelta

    from mmat.store.runs import utcnow

    later = utcnow() + timedelta(minutes=5)
    store = Store.for_settings(load_settings())
    try:
        store.writer.put("verdicts", [
            {"verdict_id": f"v-{traj}-{verifier}", "subject_kind": "trajectory", "subject_id": traj, "verifier": verifier,
             "model": None, "passed": passed, "verdict": "x", "score": None, "reasons": [], "created_at": later}
            for traj, verifier, passed in ((ids.unverified, "trajectory", True), (ids.unverified, "rules", True),
                                           (ids.text, "rules", False), (ids.overruled, "trajectory", True))])
        store.writer.flush()
    finally:
        store.close()
    export("swift", tmp_path / "s")
    # re-verified correct: in; a newer failed rule check: out; a label still overrules a newer verdict
    assert {r["traj_id"] for r in records(tmp_path / "s")} == {ids.multimodal, ids.rescued, ids.unverified}


def test_where_replaces_the_default_and_an_empty_selection_says_so(ids, tmp_path):
    result = export("swift", tmp_path / "a", where=f"t.traj_id = '{ids.unverified}'")
    assert result.n_rows == 1 and {r["traj_id"] for r in records(tmp_path / "a")} == {ids.unverified}
    with pytest.raises(ConfigError, match="no trajectories match 'FALSE'"):
        export("swift", tmp_path / "b", where="FALSE")


# --- layouts --------------------------------------------------------------------------------------------------
def _first_user(messages):
    return next(m["content"] for m in messages if m["role"] == "user")


def test_llamafactory_sharegpt_without_tools_and_sft_dpo_prompts_agree(ids, tmp_path):
    out = tmp_path / "lf"
    export("llamafactory", out)
    export("llamafactory", out, pairs=True)
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"mmat_sft", "mmat_dpo"}
    for entry in info.values():
        assert "tools" not in entry["columns"]
    sft = json.loads((out / info["mmat_sft"]["file_name"]).read_text())
    dpo = json.loads((out / info["mmat_dpo"]["file_name"]).read_text())
    assert all("tools" not in row for row in sft + dpo)
    tags = info["mmat_sft"]["tags"]
    for row in sft + dpo:
        # sharegpt: user (or observation) turns at even positions, assistant at odd ones
        for i, turn in enumerate(row["messages"]):
            assert turn[tags["role_tag"]] == (tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"])
        text = "".join(t["content"] for t in row["messages"])
        assert text.count(IMAGE_TOKEN) == len(row["images"])
        for image in row["images"]:  # relative to dataset_dir (LLaMA-Factory's default media_dir)
            assert not os.path.isabs(image) and (out / image).is_file()
    assert len(sft[0]["messages"]) % 2 == 0 and len(dpo[0]["messages"]) % 2 == 1
    [mm] = [r for r, rec in zip(sft, records(out)) if rec["traj_id"] == ids.multimodal]
    assert len(mm["images"]) == 3  # two task images, one made by step 1
    # the DPO prompt is the SFT conversation up to the pair's step: same system, same turns
    assert dpo[0]["system"] == mm["system"]
    assert dpo[0]["messages"] == mm["messages"][:len(dpo[0]["messages"])]
    assert dpo[0]["chosen"]["content"] == mm["messages"][len(dpo[0]["messages"])]["content"]
    assert dpo[0]["rejected"]["role"] == "assistant" and "final_answer('blue')" in dpo[0]["rejected"]["content"]


def test_swift_messages_images_and_rejected_response(ids, tmp_path):
    out = tmp_path / "swift"
    export("swift", out)
    export("swift", out, pairs=True)
    info = json.loads((out / "swift_dataset_info.json").read_text())
    assert {d["dataset_name"]: d["dataset_path"] for d in info} == {"mmat_sft": "mmat_sft.jsonl", "mmat_dpo": "mmat_dpo.jsonl"}
    sft = [json.loads(l) for l in (out / "mmat_sft.jsonl").read_text().splitlines()]
    assert all(set(r) == {"messages", "images"} for r in sft)
    assert all(r["messages"][0]["role"] == "system" for r in sft)
    [dpo] = [json.loads(l) for l in (out / "mmat_dpo.jsonl").read_text().splitlines()]
    assert set(dpo) == {"messages", "images", "rejected_response"}
    assert dpo["messages"][-1]["role"] == "assistant" and "final_answer('blue')" in dpo["rejected_response"]
    assert "".join(m["content"] for m in dpo["messages"]).count(IMAGE_TOKEN) == len(dpo["images"]) == 2
    assert dpo["messages"][0] == next(r for r in sft if len(r["images"]) == 3)["messages"][0]


def test_hf_is_a_datasets_folder_in_trl_layout(ids, tmp_path):
    import datasets

    out = tmp_path / "hf"
    result = export("hf", out)
    ds = datasets.load_from_disk(str(result.path))
    same = datasets.load_dataset("parquet", data_files=str(out / "mmat_sft.parquet"), split="train")
    assert len(ds) == len(same) == 3 and ds.features == same.features
    assert isinstance(ds.features["images"].feature, datasets.Image)
    row = next(r for r in ds if len(r["images"]) == 3)
    # parts in place: the task's two images in the first user turn, the step's image in the observation after step 1
    kinds = [[p["type"] for p in m["content"]] for m in row["messages"]]
    first_user, later_user = kinds[1], kinds[5]
    assert first_user.count("image") == 2 and later_user.count("image") == 1
    assert sum(k.count("image") for k in kinds) == 3
    assert [im.getpixel((0, 0)) for im in row["images"]] == [(220, 30, 30), (30, 70, 220), (30, 200, 60)]
    assert json.loads(row["mmat"])["traj_id"] == ids.multimodal


def test_hf_text_only_rows_have_no_image_column(ids, tmp_path):
    import datasets

    text_only = export("hf", tmp_path / "t", where=f"t.traj_id = '{ids.text}'")
    ds = datasets.load_from_disk(str(text_only.path))
    assert "images" not in ds.features and isinstance(ds[0]["messages"][0]["content"], str)
    as_text = export("hf", tmp_path / "all", text=True)  # every trajectory rendered for a text student
    ds = datasets.load_from_disk(str(as_text.path))
    assert len(ds) == 3 and "images" not in ds.features
    assert all(isinstance(m["content"], str) for r in ds for m in r["messages"])


def test_hf_pairs_in_trl_preference_layout(ids, tmp_path):
    import datasets

    ds = datasets.load_from_disk(str(export("hf", tmp_path / "hf", pairs=True).path))
    assert set(ds.features) == {"prompt", "chosen", "rejected", "images", "mmat"}
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert sum(p["type"] == "image" for m in row["prompt"] for p in m["content"]) == len(row["images"]) == 2
    assert "final_answer('blue')" in row["rejected"][0]["content"][0]["text"]


def test_openai_rows_embed_images_by_default(ids, tmp_path):
    out = tmp_path / "oa"
    export("openai", out)
    rows = [json.loads(l) for l in (out / "mmat_sft.jsonl").read_text().splitlines()]
    urls = [p["image_url"]["url"] for r in rows for m in r["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_url"]
    assert len(urls) == 3 and all(u.startswith("data:image/png;base64,") for u in urls)


# --- portability ----------------------------------------------------------------------------------------------
def test_copied_exports_survive_a_move_and_the_store_going_away(ids, tmp_path, mmat_home):
    out = tmp_path / "lf"
    export("llamafactory", out)
    moved = tmp_path / "elsewhere" / "lf"
    shutil.move(str(out), str(moved))
    shutil.rmtree(mmat_home / "blobs")
    rows = json.loads((moved / "mmat_sft.json").read_text())
    images = [Image.open(moved / p) for r in rows for p in r["images"]]
    assert [im.size for im in images[:3]] == [(40, 30), (20, 50), (16, 16)]
    assert "/" not in json.dumps(json.loads((moved / "dataset_info.json").read_text())["mmat_sft"]["file_name"])


def test_link_mode_links_and_embed_mode_inlines(ids, tmp_path, mmat_home):
    out = tmp_path / "linked"
    export("swift", out, images="link")
    row = next(json.loads(l) for l in (out / "mmat_sft.jsonl").read_text().splitlines() if json.loads(l)["images"])
    linked = out / row["images"][0]
    blob = next((mmat_home / "blobs").rglob(linked.name))
    assert os.path.samefile(linked, blob)
    export("swift", tmp_path / "embedded", images="embed")
    row = next(json.loads(l) for l in (tmp_path / "embedded" / "mmat_sft.jsonl").read_text().splitlines()
               if json.loads(l)["images"])
    assert row["images"][0].startswith("data:image/png;base64,") and not (tmp_path / "embedded" / "images").exists()


@pytest.mark.parametrize(("fmt", "mode", "why"), [("llamafactory", "embed", "reads images from files"),
                                                  ("hf", "copy", "stores the image bytes itself")])
def test_image_modes_a_format_cannot_hold_are_refused(ids, tmp_path, fmt, mode, why):
    with pytest.raises(ConfigError, match=why):
        export(fmt, tmp_path / "x", images=mode)


# --- the card -------------------------------------------------------------------------------------------------
def test_every_export_has_a_dataset_card(ids, tmp_path):
    out = tmp_path / "lf"
    export("llamafactory", out, license="cc-by-4.0")
    export("llamafactory", out, pairs=True)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert "## mmat_sft (llamafactory, sft)" in card and "## mmat_dpo (llamafactory, dpo)" in card
    assert "- rows: 3 (trajectories), images: 3" in card and "- rows: 1 (preference pairs)" in card
    assert "teacher models: dummy/teacher (3); controller models: dummy/agent (3); verifier models: dummy/verifier (3)" in card
    assert "tools offered: image_edit, inspect_file_as_text, visualizer" in card
    assert "domains: budget (2), photos (1)" in card
    assert "v.verifier = 'label'" in card
    assert f"dataset_dir: {out.resolve()}" in card
    manifest = json.loads((out / "mmat_export.json").read_text())
    assert manifest["license"] == "cc-by-4.0" and set(manifest["datasets"]) == {"mmat_sft", "mmat_dpo"}
