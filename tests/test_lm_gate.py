"""LMGate: the concurrency limit, AIMD under throttling, Retry-After, budgets and stats.

The rule tests drive the gate with slots directly (exceptions shaped like DSPy's); the request tests go
through real ``dspy.LM`` objects from ``mmat.lm.build_lm`` against the loopback fault server, whose own
bookkeeping (arrival times, peak concurrency) is the measurement.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest
from dspy.utils.exceptions import LMInvalidRequestError, LMRateLimitError, LMServerError

from mmat.config import load_settings
from mmat.errors import ConfigError
from mmat.lm import build_lm
from mmat.lm_gate import BudgetExhausted, LMGate, active_gate, retry_after_seconds, throttle_of, use_gate
from mmat.testing import DummyLM
from mmat.testing.fault_server import Fault, FaultServer, always, fail_numbers


def throttle(retry_after: float | None = None) -> LMRateLimitError:
    return LMRateLimitError("rate limit exceeded", retry_after=retry_after)


def run_slot(gate: LMGate, exc: BaseException | None = None, *, cost: float | None = None, tokens: int = 0):
    try:
        with gate.slot() as slot:
            if exc is not None:
                raise exc
            slot.report(tokens=tokens, cost=cost)
    except type(exc) if exc is not None else ():
        pass


def busy(gate: LMGate, n: int) -> None:
    """``n`` successes, each answered while every other slot is taken (a demand above the limit)."""
    for _ in range(n):
        held = [gate.acquire() for _ in range(gate.limit - 1)]
        run_slot(gate)
        for slot in held:
            slot.refund()


def ask(lm, text: str):
    return lm(messages=[{"role": "user", "content": text}])


@pytest.fixture
def server_lm(mmat_home, monkeypatch):
    """build(server, model, **settings) -> a hosted_vllm/openai LM against a fault server."""
    monkeypatch.delenv("HOSTED_VLLM_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)

    def build(server: FaultServer, model: str = "hosted_vllm/teacher", **overrides):
        settings = load_settings(api_base=server.api_base, **{"num_retries": 3, **overrides})
        return build_lm(model, settings=settings)

    return build


# --- arguments ----------------------------------------------------------------------------------------
def test_bad_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match="concurrency must be a whole number >= 1, got 0"):
        LMGate(0)
    with pytest.raises(ConfigError, match="max_calls must be a whole number >= 0, got -1"):
        LMGate(2, max_calls=-1)
    with pytest.raises(ConfigError, match="max_cost must be a number of USD >= 0"):
        LMGate(2, max_cost=float("nan"))
    with pytest.raises(TypeError, match="use_gate takes an LMGate or None"):
        with use_gate(4):
            pass


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(0.25) == 0.25 and retry_after_seconds("-2") == 0.0
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(later) <= 30
    assert retry_after_seconds(formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert throttle_of(throttle(2.0)) == (True, 2.0)
    assert throttle_of(LMServerError("overloaded", status=503)) == (True, None)
    assert throttle_of(LMServerError("boom", status=500)) == (False, None)
    try:
        try:
            raise throttle(1.0)
        except LMRateLimitError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert throttle_of(wrapped) == (True, 1.0)


# --- the fixed limit ----------------------------------------------------------------------------------
def test_never_more_in_flight_than_the_limit_and_waiters_are_served_in_order():
    gate = LMGate(3)
    inside, peak, lock = [0], [0], threading.Lock()

    def work(_):
        with gate.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(work, range(60)))
    stats = gate.snapshot()
    assert peak[0] == 3 and stats.calls == stats.succeeded == 60 and stats.in_flight == 0 and stats.waiting == 0

    order: list[int] = []
    gate = LMGate(1)
    held = gate.acquire()
    waiters = []
    for i in range(5):
        t = threading.Thread(target=_ordered, args=(gate, i, order))
        t.start()
        waiters.append(t)
        _wait_until(lambda i=i: gate.snapshot().waiting == i + 1)
    with held:
        pass
    for t in waiters:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def _ordered(gate: LMGate, i: int, order: list[int]) -> None:
    with gate.slot():
        order.append(i)


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


# --- AIMD rules ---------------------------------------------------------------------------------------
def test_a_burst_of_throttles_from_one_window_cuts_once_then_successes_grow_the_limit_back():
    gate = LMGate(8)
    slots = [gate.acquire() for _ in range(8)]  # one congestion window in flight
    for slot in slots:  # every one of them is answered 429
        try:
            with slot:
                raise throttle()
        except LMRateLimitError:
            pass
    stats = gate.snapshot()
    assert stats.throttled == 8 and stats.limit == 6  # 8 * 0.75, once, not 8 * 0.75 ** 8 -> 1
    # Requests started after the cut: each full window of successes (as many as the limit) adds one,
    # but climbing back to the throttled level (8) is a probe and needs a longer run after a repeat.
    for _ in range(20):  # alone in the gate: the limit is not in use, so these successes do not count
        run_slot(gate)
    assert gate.limit == 6
    busy(gate, 5)
    assert gate.limit == 6
    busy(gate, 1)
    assert gate.limit == 7
    busy(gate, 7)
    assert gate.limit == 8
    history = [limit for _, limit in gate.snapshot().limit_history]
    assert history == [8, 6, 7, 8] and max(history) <= 8


def test_repeated_throttles_at_the_same_level_make_probing_rarer_and_the_limit_stays_within_bounds():
    gate = LMGate(4)
    run_slot(gate, throttle())
    assert gate.limit == 3  # floor(4 * 0.75)
    busy(gate, 3)
    assert gate.limit == 4  # one window: back at the level that was throttled (first probe: 1 window)
    run_slot(gate, throttle())
    assert gate.limit == 3
    busy(gate, 11)
    assert gate.limit == 3  # the probe back to 4 now needs 4 windows (PROBE_GROWTH)
    busy(gate, 1)
    assert gate.limit == 4
    busy(gate, 50)
    assert gate.limit == 4  # never above concurrency
    tiny = LMGate(1)
    for _ in range(5):
        run_slot(tiny, throttle())
    assert tiny.limit == 1 and tiny.snapshot().throttled == 5  # never below 1


def test_other_failures_do_not_cut_the_limit():
    gate = LMGate(4)
    run_slot(gate, LMServerError("boom", status=500))
    run_slot(gate, LMInvalidRequestError("bad", status=400))
    stats = gate.snapshot()
    assert stats.limit == 4 and stats.failed == 2 and stats.throttled == 0


def test_retry_after_pauses_every_new_request_until_it_has_passed():
    gate = LMGate(4)
    run_slot(gate, throttle(retry_after=0.4))
    t0 = time.monotonic()
    assert gate.snapshot().paused_s > 0.3
    with gate.slot():
        waited = time.monotonic() - t0
    assert 0.35 <= waited < 2.0


# --- budgets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attempt", range(10))
def test_max_calls_admits_exactly_n_under_a_thread_race(attempt):
    gate = LMGate(4, max_calls=7)
    sent, refused, lock = [], [], threading.Lock()
    start = threading.Barrier(16)

    def worker(i):
        start.wait()
        for _ in range(3):
            try:
                with gate.slot():
                    with lock:
                        sent.append(i)
            except BudgetExhausted as e:
                with lock:
                    refused.append(e.reason)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    finished_all_three = sum(1 for i in set(sent) if sent.count(i) == 3)
    assert len(sent) == 7 and len(refused) == 16 - finished_all_three
    assert set(refused) == {"max_calls"} and gate.snapshot().calls == 7 and gate.snapshot().stopped == "max_calls"


def test_max_cost_stops_new_requests_once_the_recorded_cost_reaches_it():
    gate = LMGate(2, max_cost=0.03)
    run_slot(gate, cost=0.01)
    run_slot(gate, cost=0.01)
    run_slot(gate, cost=None)  # unknown price: counts 0, and is counted as unpriced
    run_slot(gate, cost=0.015)
    with pytest.raises(BudgetExhausted) as e:
        with gate.slot():
            pass
    assert e.value.reason == "max_cost" and "max_cost $0.03" in str(e.value)
    stats = gate.snapshot()
    assert stats.calls == 4 and stats.unpriced == 1 and stats.cost == pytest.approx(0.035)


def test_close_wakes_every_waiter_with_the_reason_and_in_flight_requests_finish():
    gate = LMGate(1)
    held = gate.acquire()
    outcomes: list[str] = []

    def waiter():
        try:
            with gate.slot():
                outcomes.append("sent")
        except BudgetExhausted as e:
            outcomes.append(e.reason)

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    _wait_until(lambda: gate.snapshot().waiting == 4)
    t0 = time.monotonic()
    gate.close("interrupted")
    for t in threads:
        t.join(5)
    assert outcomes == ["interrupted"] * 4 and time.monotonic() - t0 < 1.0
    with held:  # the request in flight completes normally
        pass
    stats = gate.snapshot()
    assert stats.succeeded == 1 and stats.calls == 1 and stats.stopped == "interrupted"
    with pytest.raises(BudgetExhausted, match="no more model requests: interrupted"):
        gate.acquire()


def test_async_waiters_share_the_limit_and_a_cancelled_waiter_gives_its_place_back():
    gate = LMGate(2)
    inside, peak = [0], [0]

    async def work():
        async with gate.aslot():
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            await asyncio.sleep(0.01)
            inside[0] -= 1

    async def main():
        await asyncio.gather(*(work() for _ in range(10)))
        held = [await gate.aacquire(), await gate.aacquire()]
        waiting = asyncio.ensure_future(gate.aacquire())
        await asyncio.sleep(0.02)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for slot in held:
            async with slot:
                pass

    asyncio.run(main())
    stats = gate.snapshot()
    assert peak[0] == 2 and stats.calls == 12 and stats.in_flight == 0 and stats.waiting == 0


# --- real requests through build_lm -------------------------------------------------------------------
def test_every_request_goes_through_the_gate_and_cache_hits_are_not_counted(server_lm):
    with FaultServer() as server:
        lm = server_lm(server)
        gate = LMGate(2, max_calls=2)
        with use_gate(gate):
            assert active_gate() is gate
            ask(lm, "one")
            ask(lm, "one")  # a cache hit: not sent, no slot, allowed even at the budget's edge
            ask(lm, "two")
            ask(lm, "two")
            with pytest.raises(BudgetExhausted) as e:
                ask(lm, "three")
        assert active_gate() is None
        assert e.value.reason == "max_calls" and "2 model requests sent (max_calls 2)" in str(e.value)
        assert server.chat_calls == 2 and gate.snapshot().calls == 2 and gate.snapshot().tokens == 30


def test_max_calls_is_exact_with_many_threads_calling_the_model(server_lm):
    with FaultServer(latency_s=0.01) as server:
        lm = server_lm(server)
        for round_no in range(3):
            server.set_plan(None)
            gate = LMGate(6, max_calls=11)
            with use_gate(gate), ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda i: _outcome(lm, f"race {round_no} {i}"), range(30)))
            assert results.count("ok") == 11 and results.count("max_calls") == 19
            assert server.chat_calls == 11 and gate.snapshot().calls == 11


def _outcome(lm, text: str) -> str:
    try:
        ask(lm, text)
        return "ok"
    except BudgetExhausted as e:
        return e.reason


def test_max_cost_with_a_priced_model(server_lm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-placeholder")
    from mmat.testing import scripted

    with FaultServer(served=["gpt-4o-mini"], responders={"gpt-4o-mini": scripted.teacher}) as server:
        lm = server_lm(server, "openai/gpt-4o-mini")
        probe = LMGate(1)
        with use_gate(probe):
            ask(lm, "price me")
        one = probe.snapshot().cost
        assert one > 0
        gate = LMGate(1, max_cost=one * 2.5)
        with use_gate(gate):
            done = sum(_outcome(lm, f"cost {i}") == "ok" for i in range(6))
        assert done == 3 and server.chat_calls == 4 and gate.snapshot().stopped == "max_cost"


def test_the_gate_retries_honouring_retry_after_and_each_attempt_takes_a_slot(server_lm, mmat_settings):
    import dspy

    from mmat.store import open_store
    from mmat.store.recorder import LMCallRecorder

    with FaultServer(plan=fail_numbers({1, 2}, Fault.status_code(429, retry_after=0.3))) as server:
        lm = server_lm(server)
        gate = LMGate(4)
        with open_store(mmat_settings) as store, use_gate(gate), dspy.context(callbacks=[LMCallRecorder(store, None)]):
            ask(lm, "retry me")
            store.writer.flush()
            rows = store.sql("select error, cache_hit from lm_calls")
        events = server.events
        assert [e["status"] for e in events] == [429, 429, 200]
        gaps = [b["arrived"] - a["finished"] for a, b in zip(events, events[1:])]
        assert all(gap >= 0.3 for gap in gaps), gaps  # measured at the server
        stats = gate.snapshot()
        assert stats.calls == 3 and stats.throttled == 2 and stats.succeeded == 1
        assert rows == [{"error": None, "cache_hit": False}]  # one row per call, as without a gate


def test_a_retry_after_pauses_the_other_threads_too(server_lm):
    with FaultServer(plan=fail_numbers({1}, Fault.status_code(429, retry_after=0.6)), latency_s=0.0) as server:
        lm = server_lm(server)
        gate = LMGate(4)
        with use_gate(gate):
            first = threading.Thread(target=ask, args=(lm, "throttled first"))
            first.start()
            _wait_until(lambda: gate.snapshot().throttled == 1)  # the 429 reached the gate
            ask(lm, "a new request meanwhile")
            first.join(5)
        throttled_at = server.events[0]["finished"]
        later = [e["arrived"] - throttled_at for e in server.events[1:]]
        assert len(later) == 2 and min(later) >= 0.6, later


def test_an_http_date_retry_after_is_honoured(server_lm):
    def plan(n, model):  # the date is written when the 429 is sent: whole seconds, 1 to 2 s ahead
        return Fault.status_code(429, retry_after=formatdate(time.time() + 2, usegmt=True)) if n == 1 else None

    with FaultServer(plan=plan) as server:
        lm = server_lm(server)
        with use_gate(LMGate(2)):
            ask(lm, "dated")
        first, second = server.events
        assert second["arrived"] - first["finished"] >= 0.9


def test_exhausted_retries_raise_the_same_error_as_without_a_gate_and_4xx_is_not_retried(server_lm):
    with FaultServer(plan=always(Fault.status_code(429, "too many requests", retry_after=0.01))) as server:
        lm = server_lm(server, num_retries=2)
        with pytest.raises(LMRateLimitError) as plain:
            ask(lm, "storm")
        assert server.chat_calls == 3  # DSPy's own retries without a gate
        server.set_plan(always(Fault.status_code(429, "too many requests", retry_after=0.01)))
        gate = LMGate(3)
        with use_gate(gate), pytest.raises(LMRateLimitError) as gated:
            ask(lm, "storm")
        assert server.chat_calls == 3 and gate.snapshot().calls == 3
        assert str(gated.value) == str(plain.value) and type(gated.value) is type(plain.value)
        assert lm.num_retries == 2
        server.set_plan(always(Fault.status_code(400, "bad request body")))
        with use_gate(LMGate(3)), pytest.raises(LMInvalidRequestError):
            ask(lm, "refused")
        assert server.chat_calls == 1


def test_budget_spent_between_retries_raises_budget_exhausted_not_the_429(server_lm):
    from mmat.pipeline.failures import classify

    with FaultServer(plan=always(Fault.status_code(429, retry_after=0.01))) as server:
        lm = server_lm(server)
        with use_gate(LMGate(2, max_calls=2)), pytest.raises(BudgetExhausted) as e:
            ask(lm, "storm")
        assert server.chat_calls == 2 and isinstance(e.value.last_error, LMRateLimitError)
        with pytest.raises(BudgetExhausted):  # a bug-or-stop, not a seed failure: classify re-raises it
            classify(e.value, None, "synth")


def test_dummy_models_go_through_the_gate_and_never_retry(mmat_settings):
    DummyLM([{"answer": "x"}], name="gated", cycle=True)
    lm = build_lm("dummy/gated", settings=mmat_settings)
    gate = LMGate(2, max_calls=1)
    with use_gate(gate):
        ask(lm, "hello dummy")
        with pytest.raises(BudgetExhausted):
            ask(lm, "another")
    assert gate.snapshot().calls == 1 and lm.num_retries == 0


def test_aimd_against_a_server_that_throttles_above_its_capacity_then_recovers(server_lm):
    with FaultServer(max_concurrent=3, throttle_retry_after=0.05, latency_s=0.03) as server:
        lm = server_lm(server, num_retries=6)
        gate = LMGate(8)
        with use_gate(gate), ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: ask(lm, f"busy {i}"), range(120)))
            busy = gate.snapshot()
            server.state.max_concurrent = None  # the server gets room: the limit grows back to --concurrency
            sent = 0
            while gate.limit < 8 and sent < 1200:
                list(pool.map(lambda i: ask(lm, f"free {i}"), range(sent, sent + 40)))
                sent += 40
        final = gate.snapshot()
        limits = [limit for _, limit in final.limit_history]
        assert busy.throttled > 0 and busy.limit < 8 and min(limits) <= 6  # cut at least once
        assert busy.throttled < busy.calls / 2  # it adapted instead of hammering the server
        assert final.limit == 8 and max(limits) <= 8 and server.peak_active <= 8
        assert final.succeeded == 120 + sent and final.calls == final.succeeded + final.throttled


def test_async_calls_go_through_the_gate_too(server_lm):
    with FaultServer(latency_s=0.05, plan=fail_numbers({1}, Fault.status_code(429, retry_after=0.1))) as server:
        lm = server_lm(server)
        gate = LMGate(2)

        async def main():
            return await asyncio.gather(*(lm.acall(messages=[{"role": "user", "content": f"async {i}"}]) for i in range(6)))

        with use_gate(gate):
            outputs = asyncio.run(main())
            asyncio.run(lm.acall(messages=[{"role": "user", "content": "async 0"}]))  # a cache hit: no slot
        stats = gate.snapshot()
        assert len(outputs) == 6 and server.peak_active <= 2
        assert server.chat_calls == stats.calls == 7 and stats.throttled == 1 and stats.succeeded == 6


def test_the_limit_history_stays_bounded_keeping_its_first_and_last_points(monkeypatch):
    import mmat.lm_gate as lm_gate

    monkeypatch.setattr(lm_gate, "HISTORY_MAX", 10)
    gate = LMGate(2)
    for _ in range(30):
        run_slot(gate, throttle())  # 2 -> 1
        while gate.limit < 2:  # back to 2 after a probe's run of successes
            busy(gate, 1)
    history = gate.snapshot().limit_history
    assert len(history) <= 10 and history[0] == (0.0, 2) and history[-1][1] == gate.limit
    assert [t for t, _ in history] == sorted(t for t, _ in history)


def test_a_refunded_slot_is_not_a_request():
    gate = LMGate(1, max_calls=1)
    unused = gate.acquire()
    unused.refund()  # acquired, never sent (e.g. the call failed before its request)
    unused.refund()  # twice is harmless
    with gate.slot():
        pass
    stats = gate.snapshot()
    assert stats.calls == 1 and stats.in_flight == 0 and stats.stopped == "max_calls"


def test_a_call_asking_for_n_candidates_is_charged_n_requests(server_lm):
    with FaultServer() as server:
        lm = server_lm(server)
        gate = LMGate(2, max_calls=4)
        with use_gate(gate):
            assert len(lm(messages=[{"role": "user", "content": "three ways"}], n=3)) == 3
            with pytest.raises(BudgetExhausted):  # 3 sent, 1 left: a call that may send 2 is refused whole
                lm(messages=[{"role": "user", "content": "two ways"}], n=2)
            ask(lm, "one more")
        assert server.chat_calls == gate.snapshot().calls == 4
