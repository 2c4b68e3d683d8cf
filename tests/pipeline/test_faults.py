"""`mmat synth` against a loopback fault-injecting server: each fault becomes rows and a one-line message,
the exit status follows the stated rule, and a rerun against the healed server completes without duplicates.

A planted key (HOSTED_VLLM_API_KEY) is sent to the server and must appear in no output, log or store row.
"""

from __future__ import annotations

import logging
import shutil

import pytest
from click.testing import CliRunner

from mmat.cli import cli
from mmat.config import load_settings
from mmat.preflight import clear_cache
from mmat.store import open_store
from mmat.structured import forget
from mmat.testing.fault_server import Fault, FaultServer, fail_from, fail_models
from mmat.testing.scripted import SPECS_PER_SEED

CANARY = "sk-canary-91b3e7-never-print-me"
TOOLS = "inspect_file_as_text,visualizer"


@pytest.fixture(scope="module")
def pool_home(tmp_path_factory):
    """A home whose store already holds the builtin pool's caption embeddings (copied per test: fast)."""
    from mmat.store.pool_images import load_pool

    home = tmp_path_factory.mktemp("pool_home")
    with open_store(load_settings(home=home)) as store:
        load_pool(store)
    return home


@pytest.fixture
def home(pool_home, tmp_path, monkeypatch):
    target = tmp_path / "home"
    target.mkdir()
    shutil.copy(pool_home / "mmat.duckdb", target / "mmat.duckdb")
    if (pool_home / "blobs").is_dir():
        shutil.copytree(pool_home / "blobs", target / "blobs")
    for var in ("OPENAI_API_KEY", "HOSTED_VLLM_API_BASE", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOSTED_VLLM_API_KEY", CANARY)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    clear_cache()
    forget()
    yield target
    clear_cache()
    forget()


def synth(server: FaultServer, home, *extra: str, tasks: int = 1, api_base: str | None = None, teacher: str = "teacher",
          env: dict[str, str] | None = None):
    args = ["synth", "--home", str(home), "--teacher", f"hosted_vllm/{teacher}", "--verifier", "hosted_vllm/verifier",
            "--controller", "hosted_vllm/agent", "--api-base", api_base or server.api_base, "--tasks", str(tasks),
            "--tools", TOOLS, "-k", "1", "--concurrency", "1", "--quiet", *extra]
    base_env = {"MMAT_NUM_RETRIES": "1", "MMAT_DEDUP_THRESHOLD": "0.99", "MMAT_STRUCTURED_OUTPUT": "json_schema"}
    result = CliRunner().invoke(cli, args, env={**base_env, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def q(home, sql: str):
    with open_store(load_settings(home=home), read_only=True) as store:
        return store.sql(sql)


def assert_no_secret(home, *outputs: str, caplog=None):
    for text in outputs:
        assert CANARY not in text
    if caplog is not None:
        assert CANARY not in caplog.text
    for path in home.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def assert_complete(home, seeds: int):
    """Every seed done once, every task once: the counts an uninterrupted run gives."""
    seed_rows = q(home, "select status, count(*) n from synth_seeds group by 1")
    assert [(r["status"], r["n"]) for r in seed_rows] == [("done", seeds)]
    n, distinct = q(home, "select count(*) n, count(distinct task_id) d from tasks")[0].values()
    assert n == distinct == seeds * SPECS_PER_SEED


@pytest.mark.slow
def test_worker_processes_use_the_server_the_command_line_named(home):
    """--api-base is a flag, in no environment variable, and the output mode is probed (auto): the workers
    must not probe the server again without the run's settings (what the driver's preflight resolved
    travels with their start)."""
    with FaultServer() as server:
        result = synth(server, home, "--executor", "process", "--workers", "2", tasks=2,
                       env={"MMAT_STRUCTURED_OUTPUT": "auto"})
        assert result.exit_code == 0, result.output
        assert_complete(home, 2)
        assert q(home, "select count(*) n from lm_calls where error is not null")[0]["n"] == 0
        assert_no_secret(home, result.output)


@pytest.mark.slow
@pytest.mark.parametrize("retry_after", [0.2, None])
def test_a_429_storm_fails_the_seed_as_a_row_and_a_rerun_completes(home, caplog, retry_after):
    caplog.set_level(logging.DEBUG)
    with FaultServer(plan=fail_models({"teacher"}, Fault.status_code(429, "too many requests", retry_after=retry_after))) as server:
        first = synth(server, home)
        assert first.exit_code == 1  # nothing produced
        assert "1 seed(s) failed by error (rate-limited 1): rerun the same command to retry them" in first.stdout
        assert "failed-by-error 1" in first.stdout and "Traceback" not in first.output
        seed = q(home, "select status, error_code, error, attempts from synth_seeds")[0]
        assert seed["status"] == "failed" and seed["error_code"] == "rate-limited" and seed["attempts"] == 1
        assert seed["error"].startswith(f"teacher model 'hosted_vllm/teacher' at {server.api_base}: HTTP 429: too many requests")
        errors = q(home, "select error from lm_calls where error is not null")
        assert errors and all("429" in r["error"] or "RateLimit" in r["error"] for r in errors)
        assert q(home, "select status from runs")[0]["status"] == "failed"
        assert any(CANARY in r["headers"].get("Authorization", "") for r in server.requests)  # the key was used

        server.set_plan(None)
        again = synth(server, home)
        assert again.exit_code == 0, again.output
        assert_complete(home, 1)
        assert q(home, "select attempts from synth_seeds")[0]["attempts"] == 2
        assert_no_secret(home, first.output, again.output, caplog=caplog)


@pytest.mark.slow
def test_persistent_500_fails_later_seeds_keeps_earlier_ones_and_the_share_rule_decides(home):
    with FaultServer() as server:
        healthy = synth(server, home, "--seed", "3", tasks=1)  # how many calls one seed takes
        calls_per_seed = server.chat_calls
        assert healthy.exit_code == 0
    with FaultServer(plan=fail_from(calls_per_seed + 1, Fault.status_code(500, "CUDA out of memory"))) as server:
        first = synth(server, home, tasks=2)  # a new run (default seed): seed 0 completes, seed 1 hits the 500s
        assert first.exit_code == 0, first.output  # 1 of 2 failed: not more than max_failed_share (0.5)
        assert "1 seed(s) failed by error (server-error 1)" in first.stdout
        failed = q(home, "select seed_idx, error from synth_seeds where status = 'failed'")
        assert [r["seed_idx"] for r in failed] == [1] and "HTTP 500: CUDA out of memory" in failed[0]["error"]
        strict = synth(server, home, tasks=2, env={"MMAT_MAX_FAILED_SHARE": "0.2"})
        assert strict.exit_code == 1  # the retried seed failed again: 1 of 1 run
        server.set_plan(None)
        again = synth(server, home, tasks=2)
        assert again.exit_code == 0 and "1 seed(s) run (1 already done)" in again.stdout
    rows = q(home, "select r.status, count(*) n from synth_seeds s join runs r using (run_id) group by 1 order by 1")
    assert [(r["status"], r["n"]) for r in rows] == [("done", 3)]
    n, distinct = q(home, "select count(*) n, count(distinct task_id) d from tasks")[0].values()
    assert n == distinct == 3 * SPECS_PER_SEED


@pytest.mark.slow
def test_no_retry_failed_skips_failed_seeds_and_says_so(home):
    with FaultServer(plan=fail_models({"teacher"}, Fault.status_code(503))) as server:
        assert synth(server, home).exit_code == 1
        server.set_plan(None)
        skipped = synth(server, home, "--no-retry-failed")
        assert skipped.exit_code == 0 and "0 seed(s) run (0 already done, 1 failed before and not retried)" in skipped.stdout
        assert q(home, "select status from synth_seeds")[0]["status"] == "failed"


@pytest.mark.slow
def test_a_timeout_is_named_with_the_setting_to_raise(home):
    with FaultServer(plan=fail_models({"teacher"}, Fault.delay(3.0))) as server:
        first = synth(server, home, env={"MMAT_REQUEST_TIMEOUT_S": "0.5", "MMAT_NUM_RETRIES": "0"})
        assert first.exit_code == 1
        error = q(home, "select error_code, error from synth_seeds")[0]
        assert error["error_code"] == "timeout"
        assert "no reply within 0.5 s: raise request_timeout_s (MMAT_REQUEST_TIMEOUT_S)" in error["error"]
        server.set_plan(None)
        assert synth(server, home, env={"MMAT_REQUEST_TIMEOUT_S": "0.5"}).exit_code == 0
        assert_complete(home, 1)


@pytest.mark.slow
@pytest.mark.parametrize("fault, code, call_error", [
    (Fault.malformed(), "malformed-reply", "not JSON"),
    (Fault.empty_choices(), "empty-reply", "empty or null response"),
    (Fault.unparsable(), "unparsable-reply", "did not fit the requested fields"),
])
def test_unusable_replies_fail_the_seed_and_a_rerun_asks_afresh(home, fault, code, call_error):
    with FaultServer(plan=fail_models({"teacher"}, fault)) as server:
        first = synth(server, home)
        assert first.exit_code == 1 and f"({code} 1)" in first.stdout
        assert q(home, "select error_code from synth_seeds")[0]["error_code"] == code
        errors = [r["error"] for r in q(home, "select error from lm_calls where model = 'hosted_vllm/teacher'")]
        assert errors and all(e is not None and call_error in e for e in errors), errors
        server.set_plan(None)  # the bad replies are in DSPy's cache: the retry must not be served them
        again = synth(server, home)
        assert again.exit_code == 0, again.output
        assert_complete(home, 1)


@pytest.mark.slow
def test_a_4xx_mid_run_stops_the_run_with_the_servers_words(home):
    with FaultServer(plan=fail_models({"agent"}, Fault.status_code(400, "This model's maximum context length is 2048 tokens"))) as server:
        result = synth(server, home)
        assert result.exit_code == 1
        line = result.stderr.strip()
        assert line.startswith(f"Error: controller model 'hosted_vllm/agent' at {server.api_base}: HTTP 400: "
                               "This model's maximum context length is 2048 tokens: pass --controller another model")
        assert "\n" not in line and "Traceback" not in result.output
        assert q(home, "select status from runs")[0]["status"] == "failed"
        assert not q(home, "select * from synth_seeds")  # the seed is redone on rerun
        server.set_plan(None)
        assert synth(server, home).exit_code == 0
        assert_complete(home, 1)


def test_wrong_path_and_wrong_model_id_are_one_line_errors_before_any_work(home, caplog):
    with FaultServer() as server:
        no_v1 = synth(server, home, api_base=server.root)
        assert no_v1.exit_code == 1 and no_v1.stderr.strip() == (
            f"Error: teacher model 'hosted_vllm/teacher' at {server.root}: HTTP 404: Not Found: add /v1 to --api-base "
            f"({server.api_base})")
        wrong = synth(server, home, teacher="smollm2")
        assert wrong.exit_code == 1 and wrong.stderr.strip() == (
            f"Error: teacher model 'hosted_vllm/smollm2' at {server.api_base}: the server serves 'teacher', 'verifier', "
            "'agent', not 'smollm2': pass --teacher hosted_vllm/teacher")
        bad_url = synth(server, home, api_base="not a url")
        assert bad_url.exit_code == 2 and "'not a url' is not an http(s) URL" in bad_url.stderr
        assert not any(r["method"] == "POST" for r in server.requests)
        assert not q(home, "select * from runs") and not q(home, "select * from lm_calls")
        assert_no_secret(home, no_v1.output, wrong.output, bad_url.output, caplog=caplog)
