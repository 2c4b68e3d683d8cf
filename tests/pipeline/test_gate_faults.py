"""The real-server failure semantics (#13) hold with every request going through an LMGate.

The fault tests of test_faults.py are collected here a second time and run inside ``use_gate`` (the autouse
fixture below; `mmat synth` itself runs every request through its own run's gate inside it): the gate retries
instead of DSPy, and each error row, one-line message, exit status and rerun must come out exactly as without
it. One more test checks what the run's gate saw (stored in the run's summary).
"""

from __future__ import annotations

import pytest

from mmat.lm_gate import LMGate, use_gate
from mmat.testing.fault_server import Fault, FaultServer, fail_models

from .test_faults import (  # noqa: F401  (fixtures and tests collected again, now through the gate)
    home,
    pool_home,
    q,
    synth,
    test_a_4xx_mid_run_stops_the_run_with_the_servers_words,
    test_a_429_storm_fails_the_seed_as_a_row_and_a_rerun_completes,
    test_a_timeout_is_named_with_the_setting_to_raise,
    test_no_retry_failed_skips_failed_seeds_and_says_so,
    test_persistent_500_fails_later_seeds_keeps_earlier_ones_and_the_share_rule_decides,
    test_unusable_replies_fail_the_seed_and_a_rerun_asks_afresh,
    test_wrong_path_and_wrong_model_id_are_one_line_errors_before_any_work,
)


@pytest.fixture(autouse=True)
def gate():
    gate = LMGate(4)
    with use_gate(gate):
        yield gate


@pytest.mark.slow
def test_the_gate_sees_every_attempt_while_the_store_keeps_one_row_per_call(home):
    import json

    with FaultServer(plan=fail_models({"teacher"}, Fault.status_code(429, "too many requests", retry_after=0.05))) as server:
        result = synth(server, home, "--concurrency", "4")  # MMAT_NUM_RETRIES=1: two attempts per teacher call
        assert result.exit_code == 1 and "(rate-limited 1)" in result.stdout
        teacher_requests = [e for e in server.events if e["model"] == "teacher"]
        rows = q(home, "select error from lm_calls where model = 'hosted_vllm/teacher'")
    stats = json.loads(q(home, "select summary from runs")[0]["summary"])["lm"]  # the run's own gate
    assert len(teacher_requests) == 2 * len(rows) and rows and all("429" in r["error"] for r in rows)
    assert stats["throttled"] == len(teacher_requests) and stats["calls"] == server.chat_calls
    assert 1 <= stats["limit"] < 4 and stats["limit_history"][0] == [0.0, 4]
    gaps = [b["arrived"] - a["finished"] for a, b in zip(teacher_requests, teacher_requests[1:])]
    assert all(gap >= 0.05 for gap in gaps), gaps  # Retry-After honoured between the attempts
