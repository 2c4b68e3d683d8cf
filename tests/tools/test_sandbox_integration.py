"""The real sandbox calling the real WorkspaceToolHost over its RPC: results, model-facing errors, final_answer."""

from __future__ import annotations

from .helpers import render_text


def test_sandboxed_code_calls_tools_and_reads_their_errors(settings, workspace):
    from mmat.sandbox import Sandbox
    from mmat.sandbox.limits import Limits
    from mmat.tools import WorkspaceToolHost

    render_text(["Gate 12 closes at 9:40"]).save(workspace / "board.png")
    code = (
        "text = ocr('board.png')\n"
        "try:\n"
        "    ocr('/etc/passwd')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "final_answer(text.splitlines()[1].split('] ')[1])\n"
    )
    with Sandbox(workspace, tools=WorkspaceToolHost(settings, workspace), limits=Limits.from_settings(settings), inputs=[]) as sb:
        result = sb.run(code)
    assert result.error is None
    assert result.final_answer == "Gate 12 closes at 9:40"
    assert "ToolError ocr: path '/etc/passwd' is outside the workspace" in result.stdout
    assert [(c.name, c.error is None) for c in result.tool_calls] == [("ocr", True), ("ocr", False)]
