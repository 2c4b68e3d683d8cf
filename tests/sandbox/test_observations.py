"""What the model reads when the sandbox stops a step (no root needed)."""

from __future__ import annotations

import signal

from mmat.errors import ModelOutputError
from mmat.sandbox import Limits
from mmat.sandbox.observations import death_error, is_model_facing, limit_error, step_stdout
from mmat.sandbox.protocol import DoneMsg

LIMITS = Limits(wall_s=5, cpu_s=2, worker_cpu_s=100)


def test_death_by_cpu_limit_is_a_cpu_time_hit():
    assert death_error(LIMITS, signal.SIGXCPU, None, 2.1)[0] == "cpu_time"
    assert death_error(LIMITS, signal.SIGKILL, None, 99.5)[0] == "cpu_time"  # hard (lifetime) limit
    kind, error = death_error(LIMITS, signal.SIGKILL, None, 0.3)
    assert kind is None and error.type == "SandboxCrash" and "SIGKILL" in error.message


def test_exit_codes_and_unknown_signals_are_named():
    assert "exited with code 7" in death_error(LIMITS, None, 7, 0.0)[1].message
    assert "signal 99" in death_error(LIMITS, 99, None, 0.0)[1].message
    assert "gone" in death_error(LIMITS, None, None, 0.0)[1].message


def test_limit_errors_name_the_limit():
    e = limit_error(LIMITS, "wall_time")
    assert e.type == "TimeoutError" and "5 s of wall time" in e.message and "restarted" in e.message
    assert "at most 64 tool calls" in limit_error(LIMITS, "tool_calls").message


def test_step_stdout_marks_cut_output():
    msg = DoneMsg(
        op="done", step=0, stdout="abc", stdout_dropped=10, child_output="kid\n", child_output_dropped=3,
        error=None, has_final_answer=False, final_answer=None, limit=None, duration_ms=1.0,
    )  # fmt: skip
    assert step_stdout(msg) == "abc\n[... 10 more characters of output not shown]\n\n[output of child processes]\nkid\n\n[... 3 more bytes not shown]\n"


def test_model_facing_tool_errors_are_matched_by_class_name():
    class ToolError(Exception):
        pass

    class ToolArgumentError(ToolError):
        pass

    assert is_model_facing(ToolArgumentError("x")) and is_model_facing(ModelOutputError("junk"))
    assert not is_model_facing(KeyError("bug")) and not is_model_facing(ValueError("bug"))
