"""`mmat models --check`, `mmat synth` and `mmat eval` against a real OpenAI-compatible server: `transformers
serve` on 127.0.0.1 with the embedded SmolLM2 (its converted safetensors copy). Checks what lands in the
store and what the user sees, not that a 135M model writes good tasks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmat.config import load_settings
from mmat.store import open_store

SERVED = "SmolLM2-135M-Instruct"
MODEL = f"hosted_vllm/{SERVED}"
FAILURE_CODES = {"rate-limited", "server-error", "timeout", "unreachable", "malformed-reply", "empty-reply",
                 "unparsable-reply", "provider-error"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transformers_cli() -> str:
    path = Path(sys.executable).with_name("transformers")
    if not path.is_file():
        pytest.skip("the transformers CLI is not installed next to this interpreter (pip install -e '.[dev]')")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.skip("transformers[serving] is not installed (pip install -e '.[dev]')")
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cli = _transformers_cli()
    from mmat.local.loader import convert_embedded
    from mmat.local.registry import resolve_local

    home = tmp_path_factory.mktemp("real_server_home")
    model_dir = convert_embedded(resolve_local("smollm2-135m", load_settings(home=home)))
    serve_dir = tmp_path_factory.mktemp("serve")
    (serve_dir / SERVED).symlink_to(model_dir, target_is_directory=True)  # the served id is the name given
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = (serve_dir / "serve.log").open("w")
    proc = subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", SERVED],
                            cwd=serve_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    api_base = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 300
    while True:
        try:
            with opener.open(f"{api_base}/models", timeout=5) as response:
                ids = [m["id"] for m in json.loads(response.read())["data"]]
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("transformers serve did not come up: " + (serve_dir / "serve.log").read_text()[-2000:])
            time.sleep(1.0)
    assert ids == [SERVED]
    yield {"api_base": api_base, "home": home}
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _mmat(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "MMAT_MAX_TOKENS": "48", "MMAT_REQUEST_TIMEOUT_S": "300", "MMAT_NUM_RETRIES": "0", "MMAT_AGENT_MAX_STEPS": "1"}
    return subprocess.run([sys.executable, "-m", "mmat.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_models_check_synth_and_eval_against_transformers_serve(server, tmp_path):
    home, api_base = tmp_path / "home", server["api_base"]
    shutil.copytree(server["home"] / "models", home / "models")  # the embedded copy the eval's tools may use

    check = _mmat(home, "models", "--api-base", api_base, "--check", MODEL, "--json")
    assert check.returncode == 0, check.stderr[-2000:]
    row = json.loads(check.stdout)[0]
    assert row["ok"] is True and row["structured_output"] in ("json_schema", "json_object", "off")
    assert row["parse"] in ("ok", "failed") and row["latency_ms"] > 0

    synth = _mmat(home, "synth", "--teacher", MODEL, "--api-base", api_base, "--tasks", "1", "--queries-per-seed", "1",
                  "-k", "1", "--tools", "inspect_file_as_text", "--quiet")
    assert synth.returncode in (0, 1), synth.stderr[-3000:]  # 1: the 135M wrote nothing usable (the stated rule)
    assert "Traceback" not in synth.stderr and f"synth " in synth.stdout
    with open_store(load_settings(home=home), read_only=True) as store:
        calls = store.sql("select model, outputs, error from lm_calls")
        assert calls and {c["model"] for c in calls} == {MODEL}
        assert all(c["outputs"] is not None or c["error"] for c in calls)
        seed = store.sql("select status, error_code from synth_seeds")[0]
        assert seed["status"] == "done" or seed["error_code"] in FAILURE_CODES
        run = store.sql("select status, settings from runs where kind = 'synth'")[0]
        resolved = json.loads(run["settings"])["structured_output_resolved"]
        assert resolved["teacher"] == row["structured_output"]  # probed once, cached, recorded with the run
        assert run["status"] == ("done" if synth.returncode == 0 else "failed")

    bench = tmp_path / "gta.json"
    bench.write_text(json.dumps({"0": {
        "tools": [], "files": [], "gt_answer": {"whitelist": [["4"]]},
        "dialogs": [{"role": "user", "content": "What is two plus two? Answer with the number."},
                    {"role": "assistant", "content": "4"}]}}))
    evaluated = _mmat(home, "eval", "--bench", str(bench), "--controller", MODEL, "--api-base", api_base, "--limit", "1",
                      "--json", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout)
    with open_store(load_settings(home=home), read_only=True) as store:
        assert store.sql("select count(*) n from eval_items where eval_run_id = ?", [metrics["eval_run_id"]])[0]["n"] == 1
        eval_calls = store.sql("select count(*) n from lm_calls where model = ? and run_id <> ?", [MODEL, run_id_of(store)])
        assert eval_calls[0]["n"] >= 1


def run_id_of(store) -> str:
    return store.sql("select run_id from runs where kind = 'synth'")[0]["run_id"]
