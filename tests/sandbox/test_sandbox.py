"""Sandbox behaviour: state across steps, tool RPC, errors as observations, limits, files, fork."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mmat.config import load_settings
from mmat.errors import ConfigError, SandboxError
from mmat.sandbox import Limits, Sandbox, StepResult

from .helpers import FAST, FakeTools, alive, needs_root, view

pytestmark = needs_root


def test_five_step_trajectory_keeps_state_and_records_tool_calls(tool_sandbox):
    sb = tool_sandbox
    steps = [
        "import math\ntotal = add(2, 3)\nprint('sum', total)",
        "words = [shout('hello'), shout(text='world')]\nprint(words)",
        "def double(x):\n    return 2 * int(x)\nprint(double(total))",
        "result = add(a=double(total), b=math.floor(2.7))\nprint(result)",
        "final_answer({'result': int(result), 'words': words})",
    ]
    results = [sb.run(code) for code in steps]
    assert [r.error for r in results] == [None] * 5
    assert results[0].stdout == "sum 5\n"
    assert results[1].stdout == "['HELLO', 'WORLD']\n"
    assert results[2].stdout == "10\n"
    assert results[3].stdout == "12\n"
    assert results[4].has_final_answer and results[4].final_answer == {"result": 12, "words": ["HELLO", "WORLD"]}
    # positional arguments were mapped by the host's signature; every call recorded in order
    recorded = [(c.name, c.arguments, c.result, c.error) for r in results for c in r.tool_calls]
    assert recorded == [
        ("add", {"a": 2, "b": 3}, "5", None),
        ("shout", {"text": "hello"}, "HELLO", None),
        ("shout", {"text": "world"}, "WORLD", None),
        ("add", {"a": 10, "b": 2}, "12", None),
    ]
    assert sb.fake_tools.calls == [(n, a) for n, a, _, _ in recorded]
    assert all(c.duration_ms >= 0 for r in results for c in r.tool_calls)
    assert not any(r.restarted for r in results)
    assert [e["event"] for e in sb.events] == ["start"]


def test_tool_error_becomes_an_exception_in_sandboxed_code(tool_sandbox):
    r = tool_sandbox.run("try:\n    fail('the image is blurry')\nexcept ToolError as e:\n    print('caught:', e)")
    assert r.error is None
    assert r.stdout == "caught: fail: the image is blurry\n"
    assert r.tool_calls[0].error == "ToolError: fail: the image is blurry"
    r = tool_sandbox.run("x = 1\nfail(why='bad argument')")
    assert r.error is not None and r.error.type == "ToolError"
    assert r.error.message == "fail: bad argument"
    assert 'File "<step 1>", line 2' in r.error.traceback
    assert "worker.py" not in r.error.traceback  # sandbox frames are trimmed
    assert not r.restarted
    assert tool_sandbox.run("print(x)").stdout == "1\n"  # a tool error keeps the state


def test_tool_host_bug_propagates_and_sandbox_recovers(tool_sandbox):
    with pytest.raises(KeyError, match="a bug in the tool host"):
        tool_sandbox.run("crash()")
    assert [e["event"] for e in tool_sandbox.events][-2:] == ["stop", "restart"]
    alive(tool_sandbox)


def test_tool_argument_checks_happen_inside_the_sandbox(tool_sandbox, workspace):
    r = tool_sandbox.run("add(1, 2, 3)")
    assert r.error.type == "TypeError" and "at most 2 positional" in r.error.message
    r = tool_sandbox.run("add(object(), 1)")
    assert r.error.type == "TypeError" and "save images to a file" in r.error.message
    r = tool_sandbox.run("from pathlib import Path\nprint(shout(Path('a.txt')))")
    assert r.stdout == "A.TXT\n"
    assert tool_sandbox.fake_tools.calls == [("shout", {"text": "a.txt"})]


def test_positional_calls_need_a_signature(workspace, mmat_home):
    class NoSignature:
        def names(self):
            return ["echo"]

        def call(self, name, kwargs):
            return json.dumps(kwargs)

    with Sandbox(workspace, tools=NoSignature(), limits=FAST) as sb:
        assert sb.run("print(echo(x=1))").stdout == '{"x": 1}\n'
        r = sb.run("echo(1)")
        assert r.error.type == "TypeError" and "keyword arguments only" in r.error.message


def test_unknown_tool_request_is_answered_with_an_error(sandbox):
    r = sandbox.run("print('ocr' in dir())\nfinal_answer(42)")
    assert r.stdout == "False\n" and r.final_answer == 42


def test_timeout_restarts_the_worker_and_loses_state(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=1.0)) as sb:
        sb.run("x = 5")
        r = sb.run("while True:\n    pass")
        assert r.limit_hit == "wall_time" and r.restarted
        assert r.error.type == "TimeoutError" and "1 s of wall time" in r.error.message
        assert 900 <= r.duration_ms < 5000
        r = sb.run("print(x)")
        assert r.error.type == "NameError"
        events = [e["event"] for e in sb.events]
        assert events == ["start", "stop", "restart"]
        assert sb.events[1]["reason"] == "wall_time"


def test_cpu_limit_kills_a_spinning_step(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=20.0, cpu_s=1.0)) as sb:
        r = sb.run("while True:\n    pass")
        assert r.limit_hit == "cpu_time" and r.restarted
        assert r.duration_ms < 10_000
        alive(sb)


def test_syntax_error_is_a_normal_step_error(sandbox):
    sandbox.run("y = 3")
    r = sandbox.run("def f(:\n    pass")
    assert r.error.type == "SyntaxError" and not r.restarted
    assert "<step 1>" in r.error.traceback
    assert sandbox.run("print(y)").stdout == "3\n"


def test_error_traceback_points_into_earlier_steps(sandbox):
    sandbox.run("def boom(n):\n    return 1 / n")
    r = sandbox.run("boom(0)")
    assert r.error.type == "ZeroDivisionError"
    assert 'File "<step 0>", line 2, in boom' in r.error.traceback
    assert "return 1 / n" in r.error.traceback


def test_new_files_are_reported(tool_sandbox, workspace):
    (view(workspace) / "given.txt").write_text("input")  # put in by the parent while the sandbox is open
    r = tool_sandbox.run(
        "import os\nopen('a.txt', 'w').write('x')\nos.makedirs('sub/dir')\nopen('sub/dir/b.bin', 'wb').write(b'1')\n"
        "print(make_image('chart.png'))"
    )
    assert r.stdout == "Saved image to chart.png\n"
    assert r.new_files == ["a.txt", "chart.png", "sub/dir/b.bin"]
    r = tool_sandbox.run("open('a.txt', 'a').write('more')\nprint(open('given.txt').read())")
    assert r.new_files == ["a.txt"] and r.stdout == "input\n"
    assert tool_sandbox.run("pass").new_files == []
    assert (view(workspace) / "sub/dir/b.bin").read_bytes() == b"1"


def test_inputs_are_copied_into_the_workspace(tmp_path, workspace, mmat_home):
    src = tmp_path / "inputs"
    src.mkdir()
    (src / "photo.png").write_bytes(b"png")
    with Sandbox(workspace, inputs=[src / "photo.png"], limits=FAST) as sb:
        assert sb.inputs == ["photo.png"]
        r = sb.run("import os\nprint(sorted(os.listdir('.')), open('/workspace/photo.png','rb').read())")
        assert r.stdout == "['photo.png'] b'png'\n"
        sb.run("open('photo.png', 'wb').write(b'changed')")
    assert (src / "photo.png").read_bytes() == b"png"  # the original is untouched
    with pytest.raises(SandboxError, match="does not exist"):
        Sandbox(tmp_path / "ws2", inputs=[tmp_path / "missing.png"])


def test_output_is_captured_and_capped(workspace, mmat_home):
    with Sandbox(workspace, limits=Limits(wall_s=5, max_output_chars=100)) as sb:
        r = sb.run("import sys\nprint('a' * 150)\nprint('to stderr', file=sys.stderr)")
        assert r.stdout.startswith("a" * 100 + "\n[... ")
        assert "more characters of output not shown" in r.stdout
        r = sb.run("import subprocess\nsubprocess.run(['echo', 'from a child'])\nprint('parent')")
        assert r.stdout == "parent\n\n[output of child processes]\nfrom a child\n"


def test_final_answer_values_are_json_safe(sandbox):
    r = sandbox.run("import numpy as np\nfinal_answer(np.arange(3))\nprint('not reached')")
    assert r.has_final_answer and r.final_answer == [0, 1, 2] and r.stdout == ""
    r = sandbox.run("class Box:\n    def __str__(self):\n        return 'a box'\nfinal_answer(Box())")
    assert r.final_answer == "a box"
    r = sandbox.run("try:\n    final_answer('kept')\nexcept Exception:\n    print('swallowed')")
    assert r.final_answer == "kept" and r.stdout == ""  # `except Exception` cannot swallow it
    r = sandbox.run("final_answer = None\nprint('redefined')")
    assert sandbox.run("final_answer(1)").final_answer == 1  # re-injected every step


def test_common_libraries_work_inside(workspace, mmat_home):
    code = (
        "import numpy as np, PIL.Image, cv2, matplotlib.pyplot as plt\n"
        "img = PIL.Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))\nimg.save('black.png')\n"
        "plt.plot([1, 2]); plt.savefig('plot.png')\n"
        "print(cv2.imread('black.png').shape)"
    )
    with Sandbox(workspace, limits=Limits(wall_s=60)) as sb:  # matplotlib alone imports in ~1 s
        r = sb.run(code)
    assert r.error is None, r.error
    assert r.stdout == "(8, 8, 3)\n"
    assert r.new_files == ["black.png", "plot.png"]
    # threads (clone3 -> ENOSYS -> clone) and process pools (fork, pipes, /dev/shm semaphores)
    code = (
        "import threading, multiprocessing as mp\nout = []\n"
        "ts = [threading.Thread(target=out.append, args=(i,)) for i in range(3)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
        "with mp.Pool(2) as pool:\n    print(sorted(out), pool.map(abs, [-1, -2]))"
    )
    with Sandbox(workspace, limits=Limits(wall_s=60)) as sb:
        r = sb.run(code)
    assert r.error is None, r.error
    assert r.stdout == "[0, 1, 2] [1, 2]\n"


def test_fork_is_isolated_from_parent_and_siblings(tool_sandbox, workspace):
    sb = tool_sandbox
    sb.run("x = add(1, 1)\nopen('shared.txt', 'w').write('base')\nprint(make_image('img.png'))")
    sb.run("items = [x]\nopen('log.txt', 'a').write('one;')")
    calls_before = len(sb.fake_tools.calls)
    a, b = sb.fork(), sb.fork()
    try:
        assert sb.fake_tools.calls[calls_before:] == []  # replay answered tools from the record
        assert a.workspace != b.workspace != workspace
        for fork in (a, b):
            r = fork.run("print(x, items, open('shared.txt').read(), open('log.txt').read(), os.path.exists('img.png') if 'os' in dir() else __import__('os').path.exists('img.png'))")
            assert r.stdout == "2 ['2'] base one; True\n", r.stdout
        a.run("x = 'changed in a'\nitems.append('a')\nopen('only_a.txt', 'w').write('a')\nopen('shared.txt', 'w').write('from a')")
        r = b.run("import os\nprint(x, items, os.path.exists('only_a.txt'), open('shared.txt').read())")
        assert r.stdout == "2 ['2'] False base\n"
        r = sb.run("import os\nprint(x, items, os.path.exists('only_a.txt'), open('shared.txt').read())")
        assert r.stdout == "2 ['2'] False base\n"
        assert not (view(workspace) / "only_a.txt").exists() and (view(a.workspace) / "only_a.txt").exists()
        # a fork's tool calls go to its own workspace
        a.run("make_image('a.png')")
        assert (view(a.workspace) / "a.png").exists() and not (view(workspace) / "a.png").exists()
        assert sb.events[-1]["event"] == "fork" and sb.events[-1]["replayed_steps"] == 2
        assert a.events[-1]["event"] == "forked" and a.events[-1]["diverged"] is False
        grandchild = a.fork()
        with grandchild:
            assert grandchild.run("print(x, items)").stdout == "changed in a ['2', 'a']\n"
    finally:
        a.close()
        b.close()
    assert not a.workspace.exists() and not b.workspace.exists()


def test_fork_needs_a_rebindable_tool_host(workspace, mmat_home, tmp_path):
    class Plain:
        def names(self):
            return ["echo"]

        def call(self, name, kwargs):
            return "ok"

    with Sandbox(workspace, tools=Plain(), limits=FAST) as sb:
        with pytest.raises(ConfigError, match="for_workspace"):
            sb.fork()
        with sb.fork(tmp_path / "explicit", tools=Plain()) as fork:
            assert fork.run("print(echo())").stdout == "ok\n"
        assert (tmp_path / "explicit").exists()  # an explicit fork workspace is kept


def test_events_and_close(workspace, mmat_home):
    sb = Sandbox(workspace, limits=FAST)
    pid = sb.worker_pid
    assert pid and Path(f"/proc/{pid}").exists()
    sb.close()
    sb.close()  # idempotent
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert [e["event"] for e in sb.events] == ["start", "close"]
    assert sb.events[0]["ms"] > 0 and sb.events[0]["uid"] == sb.uid
    with pytest.raises(SandboxError, match="closed"):
        sb.run("1")
    assert os.stat(workspace).st_uid == os.geteuid()  # the workspace is given back


def test_limits_validate_and_come_from_settings(mmat_home):
    with pytest.raises(ConfigError, match="wall_s"):
        Limits(wall_s=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        Limits(memory_mb=16)
    limits = Limits.from_settings(load_settings(step_timeout_s=12.5, sandbox_memory_mb=1024))
    assert limits.wall_s == 12.5 and limits.memory_mb == 1024 and limits.cpu_s >= 25


def test_run_rejects_non_string_code(sandbox):
    with pytest.raises(ConfigError, match="str"):
        sandbox.run(b"print(1)")  # type: ignore[arg-type]


def test_step_result_observation_text():
    r = StepResult(stdout="hi\n", error=None)
    assert r.observation() == "hi" and r.ok
    r = StepResult(stdout="", error={"type": "TimeoutError", "message": "slow", "traceback": ""}, restarted=True)
    assert r.observation().startswith("TimeoutError: slow\n[sandbox] The Python process was restarted")


def test_not_a_tool_host_is_a_config_error(workspace, mmat_home):
    with pytest.raises(ConfigError, match="tool host"):
        Sandbox(workspace, tools=object())  # type: ignore[arg-type]


def test_fake_tool_host_is_rebindable(tmp_path):
    assert FakeTools(tmp_path).for_workspace(tmp_path / "x").workspace == tmp_path / "x"


def test_sandboxes_run_in_parallel_threads(tmp_path, mmat_home):
    from concurrent.futures import ThreadPoolExecutor

    def trajectory(i: int) -> list[str]:
        ws = tmp_path / f"ws{i}"
        with Sandbox(ws, tools=FakeTools(ws), limits=FAST) as sb:
            outs = [sb.run(f"n = add({i}, 0)").stdout, sb.run("print(int(n) * 10)").stdout]
            return outs

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(trajectory, range(4)))
    assert results == [["", f"{i * 10}\n"] for i in range(4)]


def test_without_a_zygote_each_launcher_is_its_own_interpreter(workspace, mmat_home, monkeypatch):
    """Where no zygote can run (no pidfd), launchers start one by one; the sandbox is the same."""
    from mmat.sandbox import process

    monkeypatch.setattr(process._Zygote, "_broken", "disabled by this test")
    with Sandbox(workspace, limits=FAST) as sb:
        launcher = sb._holder[0].proc
        assert launcher._popen is not None and launcher._pidfd is None
        r = sb.run("import os\nprint(6 * 7, os.getuid() != 0)\nprint(open('/proc/self/cmdline', 'rb').read().count(b'_launcher'))")
        assert r.error is None and r.stdout == "42 True\n0\n"
        worker = sb.worker_pid
    assert process.launch_method().startswith("one interpreter per sandbox")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{worker}")
