"""`mmat synth --executor process`: worker processes write exactly what a local run writes and resume; the
driver's one gate counts every worker's requests (a budget stops at that many, a throttle cuts the limit for
all); the driver's socket refuses a wrong key; a dead worker or a dead driver loses nothing and leaves no
process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from mmat.config import load_settings
from mmat.lm_gate import BudgetExhausted, LMGate
from mmat.pipeline.process_executor import RemoteGate, _gate_methods, _RpcClient, _RpcServer
from mmat.pipeline.synth import EXIT_BUDGET, SynthRequest, run_synth
from mmat.store import open_store

from .conftest import TOOLS
from .test_scheduler import expected_counts, table_counts

pytestmark = pytest.mark.slow


def _process(request: SynthRequest, workers: int = 2) -> SynthRequest:
    return request.model_copy(update={"executor": "process", "workers": workers})


def _lm_rows(settings) -> dict[str, int]:
    with open_store(settings, read_only=True) as store:
        return {"sent": store.sql("select count(*) n from lm_calls where not cache_hit")[0]["n"],
                "unattributed": store.sql("select count(*) n from lm_calls where seed_idx is null")[0]["n"]}


def test_worker_processes_write_what_a_local_run_writes_and_a_rerun_resumes(synth_settings, tmp_path, scripted_models):
    seeds = 3
    request = SynthRequest(tasks=seeds, tools=TOOLS, trajectories_per_task=1)
    summary = run_synth(synth_settings, _process(request), progress=False)
    assert summary.status == "done" and summary.seeds_run == seeds and summary.exit_code == 0
    assert table_counts(synth_settings) == expected_counts(seeds)
    rows = _lm_rows(synth_settings)
    # every request the workers sent went through the driver's gate, and each has its lm_calls row
    assert rows["sent"] == summary.lm["calls"] > 0 and rows["unattributed"] == 0
    assert sum(len(m.calls) for m in scripted_models.values()) == 0  # nothing ran in the driver itself

    again = run_synth(synth_settings, _process(request), progress=False)
    assert again.seeds_done_before == seeds and again.seeds_run == 0
    assert table_counts(synth_settings) == expected_counts(seeds)


def test_a_call_budget_counts_the_requests_of_all_workers_and_a_rerun_completes(synth_settings, scripted_models):
    seeds, budget = 3, 20
    request = SynthRequest(tasks=seeds, tools=TOOLS, trajectories_per_task=1)
    first = run_synth(synth_settings, _process(request.model_copy(update={"max_calls": budget})), progress=False)
    assert first.status == "budget" and first.exit_code == EXIT_BUDGET and first.lm["calls"] == budget
    assert _lm_rows(synth_settings)["sent"] == budget
    assert first.seeds_run < seeds
    again = run_synth(synth_settings, _process(request), progress=False)
    assert again.status == "done" and again.seeds_done_before + again.seeds_run == seeds
    assert table_counts(synth_settings) == expected_counts(seeds)


# --- the gate and the socket, without a run -------------------------------------------------------------
@pytest.fixture
def served_gate():
    gate = LMGate(4, max_calls=6)
    server = _RpcServer(_gate_methods(gate))
    yield gate, server
    server.close()


def test_the_socket_refuses_a_wrong_key_and_lives_in_a_private_directory(served_gate):
    from multiprocessing import AuthenticationError

    gate, server = served_gate
    assert os.stat(os.path.dirname(server.address)).st_mode & 0o077 == 0
    with pytest.raises(AuthenticationError):
        _RpcClient(server.address, b"x" * 32).call("acquire", 1)
    assert gate.snapshot().calls == 0  # the stranger took no slot


def _returns_within(seconds: float, fn: Callable[[], object]) -> bool:
    done = threading.Event()
    threading.Thread(target=lambda: (fn(), done.set()), daemon=True).start()
    return done.wait(seconds)


def test_a_peer_that_never_answers_the_handshake_holds_up_neither_workers_nor_close(served_gate):
    gate, server = served_gate
    with socket.socket(socket.AF_UNIX) as staller:
        staller.connect(server.address)  # connects, then never answers the challenge
        assert _returns_within(5, lambda: _RpcClient(server.address, server.authkey).call("acquire", 1))
        assert gate.snapshot().in_flight == 1
        assert _returns_within(5, server.close)


def test_close_returns_right_after_a_refused_key_every_time():
    # close() used to wake the accept thread with a handshaking Client: when that thread had seen the
    # refusal, then _closed, and returned, the Client waited for a challenge forever. A race: repeated,
    # with threads switching often (before the fix, about 1 in 500 closes hung at this interval).
    from multiprocessing import AuthenticationError

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(150):
            server = _RpcServer(_gate_methods(LMGate(1)))
            with pytest.raises(AuthenticationError):
                _RpcClient(server.address, b"x" * 32).call("acquire", 1)
            assert _returns_within(5, server.close)
            assert not os.path.exists(server.address)
    finally:
        sys.setswitchinterval(interval)


def test_a_new_server_removes_the_socket_directories_of_dead_drivers_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - 3600

    def directory(name: str) -> Path:
        path = tmp_path / name
        path.mkdir(mode=0o700)
        return path

    dead = directory("mmat-rpc-dead")  # a SIGKILLed driver's: the socket is there, nothing listens
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead / "rpc"))
    empty = directory("mmat-rpc-empty")  # killed between mkdtemp and bind
    young = directory("mmat-rpc-young")  # maybe a run between mkdtemp and bind right now
    other = directory("not-mmat-rpc")
    stranger = directory("mmat-rpc-stranger")  # another user's
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stranger / "rpc"))
    if os.getuid() == 0:
        os.chown(stranger, 54321, 54321)
    live = _RpcServer(_gate_methods(LMGate(2)))
    for path in (dead, empty, other, stranger, Path(live.address).parent):
        os.utime(path, (old, old))
    second = _RpcServer(_gate_methods(LMGate(2)))
    try:
        assert not dead.exists() and not empty.exists()
        assert young.exists() and other.exists() and os.path.exists(live.address)
        assert stranger.exists() == (os.getuid() == 0)
        _RpcClient(live.address, live.authkey).call("acquire", 1)  # the live one still serves
    finally:
        live.close()
        second.close()


def test_remote_slots_obey_the_drivers_limit_budget_and_throttles(served_gate):
    gate, server = served_gate
    remote = RemoteGate(_RpcClient(server.address, server.authkey), 4)
    peak, held, lock = [0], [0], threading.Lock()

    def hold() -> None:
        for _ in range(2):
            try:
                slot = remote.acquire()
            except BudgetExhausted:
                return
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], gate.snapshot().in_flight)
            time.sleep(0.05)
            with lock:
                held[0] -= 1
            with slot:
                slot.report(tokens=10, cost=0.001)

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    stats = gate.snapshot()
    assert stats.calls == 6 and stats.succeeded == 6 and stats.tokens == 60 and peak[0] <= 4
    with pytest.raises(BudgetExhausted) as refused:  # the reason crosses the socket
        remote.acquire()
    assert refused.value.reason == "max_calls"


def test_a_throttled_remote_request_cuts_the_drivers_limit():
    gate = LMGate(8)
    server = _RpcServer(_gate_methods(gate))
    try:
        remote = RemoteGate(_RpcClient(server.address, server.authkey), 8)
        slots = [remote.acquire() for _ in range(8)]  # the limit is in use
        remote._settle(slots[0], False, True, 0.5)
        stats = gate.snapshot()
        assert stats.throttled == 1 and stats.limit < 8 and stats.paused_s > 0
        for slot in slots[1:]:
            slot.refund()
        assert gate.snapshot().in_flight == 0 and gate.snapshot().calls == 1
    finally:
        server.close()


# --- processes that die -----------------------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import sys
    from mmat.config import load_settings
    from mmat.pipeline.synth import SynthRequest, run_synth
    from mmat.testing import scripted

    scripted.register(latency_s=0.05)
    settings = load_settings(teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                             dedup_threshold=0.99, concurrency=4)
    try:
        run_synth(settings, SynthRequest(tasks={seeds}, tools={tools!r}, trajectories_per_task=1, executor="process",
                                         workers=2), progress=False)
    except Exception as e:
        print("ERROR", e, file=sys.stderr)
        sys.exit(1)
    print("FINISHED")
""")
SEEDS = 4


def _start(home) -> subprocess.Popen:
    env = {**os.environ, "MMAT_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT.format(seeds=SEEDS, tools=TOOLS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _workers_once_busy(proc: subprocess.Popen, home) -> list[psutil.Process]:
    deadline = time.monotonic() + 300
    while not any(home.glob("workspaces/*/seed_*/task_*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    driver = psutil.Process(proc.pid)
    workers = [c for c in driver.children() if c.cmdline() == driver.cmdline()]  # forks of the driver
    assert len(workers) >= 2, workers
    return workers


def _gone(processes: list[psutil.Process], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes):
            return True
        time.sleep(0.1)
    return False


def _rerun_and_check(home) -> None:
    proc = _start(home)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "FINISHED" in out, err[-2000:]
    assert table_counts(load_settings(home=home)) == expected_counts(SEEDS)


def test_sigkill_of_the_driver_takes_its_workers_and_a_rerun_gives_exact_counts(tmp_path):
    home = tmp_path / "home"
    proc = _start(home)
    workers = _workers_once_busy(proc, home)
    descendants = [d for w in workers for d in w.children(recursive=True)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _gone(workers), "a worker outlived its driver"
    assert _gone(descendants), "a worker's sandbox or helper outlived it"
    _rerun_and_check(home)


def test_a_worker_that_dies_ends_the_run_with_its_name_and_a_rerun_gives_exact_counts(tmp_path):
    home = tmp_path / "home"
    proc = _start(home)
    workers = _workers_once_busy(proc, home)
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and f"synthesis worker process {victim.pid} died" in err, err[-2000:]
    assert _gone(workers), "the other worker outlived the run"
    _rerun_and_check(home)

