"""FileGenerator: pool retrieval for images, sandboxed teacher code with traceback-driven retries."""

import os

import pytest

from mmat.programs import FileGenerator, check_file, file_name_for
from mmat.sandbox import Limits
from mmat.signatures.queries import FileNeed, QuerySpec
from mmat.testing import DummyLM

FAST = Limits(wall_s=20)


def need(modality, content, hint, fmt=None):
    return FileNeed(modality=modality, content=content, name_hint=hint, format=fmt)


def spec(*needs, query="Which category cost the most in March?"):
    return QuerySpec(query=query, intended_tools=["inspect_file_as_text"], file_needs=list(needs),
                     expected_answer_type="short_text")


def test_images_come_from_the_pool_and_are_not_reused(small_pool, tmp_path, use_lm):
    generator = FileGenerator(small_pool)
    result = generator(spec(need("image", "an astronaut in a space suit", "crew photo!"),
                            need("image", "an astronaut in a space suit", "crew photo!")), tmp_path)
    assert result.ok and [f.name for f in result.files] == ["crew_photo.png", "crew_photo_2.png"]
    first, second = result.files
    assert first.source == "pool" and "astronaut" in first.caption and first.image_id != second.image_id
    assert first.path.read_bytes() == small_pool.get(first.image_id).png
    assert result.attempts == []  # no teacher call for pool images


def test_unmatched_image_need_is_a_failure(small_pool, tmp_path):
    result = FileGenerator(small_pool, min_image_score=0.99)(spec(need("image", "a cat", "cat")), tmp_path)
    assert not result.ok and "no pool image matches" in result.failures[0].reason


def test_failing_script_gets_its_traceback_back_then_succeeds(small_pool, tmp_path, use_lm):
    broken = "rows = [('rent', 950), ('food', 412.5)]\nraise ValueError('no writer configured')"
    fixed = "import csv\nwith open('march.csv', 'w', newline='') as f:\n    csv.writer(f).writerows([('category', 'amount'), ('rent', 950)])"
    dm = DummyLM([{"code": broken}, {"code": f"```python\n{fixed}\n```"}], name="files1")
    with use_lm("dummy/files1"):
        result = FileGenerator(small_pool, limits=FAST)(spec(need("table", "March expenses by category", "march", "csv")), tmp_path)
    assert result.ok, result.failures
    [f] = result.files
    assert (f.name, f.source, f.mime, f.modality) == ("march.csv", "generated", "text/csv", "table")
    assert f.path.read_text().startswith("category,amount")
    assert [a.ok for a in result.attempts] == [False, True]
    assert "ValueError: no writer configured" in result.attempts[0].error
    fix_prompt = dm.calls[1].messages[-1]["content"]
    assert "[[ ## previous_code ## ]]\n" + broken in fix_prompt
    assert "ValueError: no writer configured" in fix_prompt


def test_script_that_writes_the_wrong_file_is_told_so_and_retries_run_out(small_pool, tmp_path, use_lm):
    dm = DummyLM([{"code": "open('other.txt', 'w').write('x')"}], name="files2", cycle=True)
    with use_lm("dummy/files2"):
        result = FileGenerator(small_pool, max_retries=2, limits=FAST)(spec(need("text", "a server log", "server", "log")), tmp_path)
    assert not result.ok and len(result.attempts) == 3 and len(dm.calls) == 3
    assert "did not create 'server.log'" in result.attempts[0].error and "other.txt" in result.attempts[0].error
    assert "no working script after 3 attempts" in result.failures[0].reason


def test_unreadable_teacher_answer_counts_as_an_attempt(small_pool, tmp_path, use_lm):
    DummyLM([{"nonsense": 1}], name="files3", cycle=True)
    with use_lm("dummy/files3"):
        result = FileGenerator(small_pool, max_retries=1, limits=FAST)(spec(need("code", "a sorting script", "sorter")), tmp_path)
    assert not result.ok and len(result.attempts) == 2
    assert all("file generation" in a.error for a in result.attempts)


def test_file_names_are_safe_unique_and_fit_the_modality():
    taken = set()
    assert file_name_for(need("document", "x" * 5, "../../etc/Pass wd", "docx"), taken) == "pass_wd.docx"
    assert file_name_for(need("document", "x" * 5, "../../etc/Pass wd", "docx"), taken) == "pass_wd_2.docx"
    assert file_name_for(need("table", "x" * 5, "report.xlsx", "png"), taken) == "report.csv"  # png is no table
    assert file_name_for(need("archive", "x" * 5, "???"), taken) == "file.zip"


@pytest.mark.parametrize(
    "name,data,fmt,problem",
    [("a.pdf", b"%PDF-1.4 ...", "pdf", None), ("a.pdf", b"hello", "pdf", "not a PDF"),
     ("a.json", b'{"a": 1}', "json", None), ("a.json", b"{a: 1", "json", "not valid JSON"),
     ("a.xlsx", b"PK no zip", "xlsx", "not a valid xlsx"), ("a.csv", b"", "csv", "empty"),
     ("a.txt", b"\xff\xfe\x00bad", "txt", "not UTF-8")],
)
def test_check_file(tmp_path, name, data, fmt, problem):
    path = tmp_path / name
    path.write_bytes(data)
    found = check_file(path, fmt)
    assert (found is None) if problem is None else (problem in found)


def test_check_file_refuses_links_and_reports_missing(tmp_path):
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert "symbolic link" in check_file(tmp_path / "link.txt", "txt")
    assert check_file(tmp_path / "nope.txt", "txt") == "missing"


def test_existing_files_get_kind_and_mime_from_their_suffix(tmp_path):
    from mmat.programs import GeneratedFile

    photo = GeneratedFile.from_path(tmp_path / "IMG_01.JPG")
    assert (photo.name, photo.modality, photo.mime, photo.source, photo.is_image) == ("IMG_01.JPG", "image", "image/jpeg", "user", True)
    assert GeneratedFile.from_path(tmp_path / "x.bin", name="notes.md").modality == "text"
    assert GeneratedFile.from_path(tmp_path / "talk.mp3").modality == "audio"
    assert GeneratedFile.from_path(tmp_path / "data.xlsx").modality == "table"


def test_a_rerun_in_the_same_workspace_writes_the_same_names(small_pool, tmp_path):
    task = spec(need("image", "a cup of espresso", "cup"), need("image", "galaxies in deep space", "sky"))
    first = FileGenerator(small_pool)(task, tmp_path)
    again = FileGenerator(small_pool)(task, tmp_path)
    assert [f.name for f in again.files] == [f.name for f in first.files] == ["cup.png", "sky.png"]
    assert [f.image_id for f in again.files] == [f.image_id for f in first.files]


def test_with_settings_the_scripts_sandbox_is_a_warm_worker_of_the_shared_pool(small_pool, settings, tmp_path, use_lm):
    """Synthesis passes its settings: the documents' sandbox is adopted from the process-wide pool (the
    one CodeAgent uses for the same limits), the file lands in the workspace as with a cold sandbox,
    and the worker is not handed out again."""
    from mmat.sandbox.pool import close_shared_pools, shared_pool

    script = "import csv\nwith open('march.csv', 'w', newline='') as f:\n    csv.writer(f).writerows([('category', 'amount'), ('rent', 950)])"
    settings = settings.model_copy(update={"sandbox_pool": 1})
    try:
        pool = shared_pool(settings, FAST)
        assert pool is not None and pool.wait_ready(timeout_s=60), pool.last_error
        before = dict(pool.stats)
        DummyLM([{"code": script}], name="files_warm", cycle=True)
        generator = FileGenerator(small_pool, limits=FAST, settings=settings)
        with use_lm("dummy/files_warm"):
            result = generator(spec(need("table", "March expenses by category", "march", "csv")), tmp_path / "a")
            assert result.ok, result.failures
            assert pool.stats["warm"] == before["warm"] + 1 and pool.stats["cold"] == before["cold"]
            [f] = result.files
            assert f.path == tmp_path / "a" / "march.csv" and f.source == "generated"
            assert f.path.read_text().startswith("category,amount") and f.path.stat().st_uid == os.geteuid()
            # a second task takes the replacement (or starts cold), never the first task's worker
            assert pool.wait_ready(timeout_s=60), pool.last_error
            again = generator(spec(need("table", "March expenses by category", "march", "csv")), tmp_path / "b")
        assert again.ok and pool.stats["warm"] == before["warm"] + 2
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["march.csv"]
    finally:
        close_shared_pools()
