"""The parent's validation of worker messages (no root needed)."""

from __future__ import annotations

import pytest

from mmat.sandbox.protocol import DoneMsg, ProtocolViolation, ToolMsg, parse_worker_message


def test_valid_messages_parse():
    assert isinstance(parse_worker_message(b'{"op": "tool", "name": "ocr", "kwargs": {"image_path": "a.png"}}'), ToolMsg)
    done = (
        b'{"op": "done", "step": 3, "stdout": "", "stdout_dropped": 0, "child_output": "", "child_output_dropped": 0,'
        b' "error": null, "has_final_answer": true, "final_answer": [1, 2], "limit": null, "duration_ms": 1.5}'
    )
    msg = parse_worker_message(done)
    assert isinstance(msg, DoneMsg) and msg.final_answer == [1, 2]


@pytest.mark.parametrize(
    "line",
    [
        b"junk",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"op": "exec", "code": "x"}',
        b'{"op": "tool", "name": "ocr"}',
        b'{"op": "tool", "name": "ocr", "kwargs": {}, "extra": 1}',
        b'{"op": "done", "step": 0, "stdout": "forged"}',
        b'{"op": "done", "step": 0, "stdout": "", "stdout_dropped": -1, "child_output": "", "child_output_dropped": 0,'
        b' "error": null, "has_final_answer": false, "final_answer": null, "limit": null, "duration_ms": 0}',
    ],
)
def test_anything_else_is_a_violation(line):
    with pytest.raises(ProtocolViolation):
        parse_worker_message(line)
