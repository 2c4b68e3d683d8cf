"""One gate every model request in the process passes: adaptive concurrency (AIMD) under rate limits, budgets.

``with use_gate(LMGate(32, max_calls=500)):`` makes every request a ``MmatLM`` sends (each HTTP attempt,
retries included; cached replies bypass it) take a slot first:

- **Concurrency.** At most ``limit`` requests are in flight. The limit starts at ``concurrency`` and adapts
  like TCP's congestion window: a throttled reply (HTTP 429 or 503) cuts it multiplicatively, once per
  congestion window (requests already in flight when it was cut cannot cut it again, so a burst of 429s
  costs one cut, not a collapse to 1); a window of successes (as many as the limit) grows it by one. Only
  successes while the limit is in use count (all slots taken, or requests waiting): a run that makes fewer
  calls than the limit allows does not raise it untested, to burst past the server later. It
  never exceeds ``concurrency`` and never drops below 1. After a cut, each step to or past the level that
  was throttled needs a longer run of successes: ``PROBE_GROWTH`` times as many windows every time about the
  same level is throttled again (up to ``MAX_PROBE_WINDOWS``), half as many after a probe held. A server with a fixed
  capacity is then probed rarely, instead of every few windows (each probe costs a cut and, with a
  Retry-After, a pause of every new request).
- **Retry-After.** A throttled reply's ``Retry-After`` (seconds or an HTTP-date) pauses every new request
  until it has passed; requests in flight go on.
- **Budgets.** ``max_calls``: exactly that many requests are sent, never one more, however many threads
  race for the last slot. ``max_cost``: no request starts once the recorded cost (DSPy's estimate of the
  provider's price; unknown prices count 0) reaches it. Once a budget is spent, or ``close(reason)`` was
  called, every waiter and every later request raises ``BudgetExhausted`` before anything is sent.
- **Stats.** ``snapshot()``: in flight, the current limit, requests, throttles, tokens, cost, recent
  calls/s and tokens/s, and the limit over time (what a run stores in its summary).

Retries of requests through the gate happen here (``attempts``), each attempt through the gate, because
a retry loop below the gate would hide the 429s from it; the last attempt's exception is raised as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from mmat.errors import ConfigError, MmatError

__all__ = ["LMGate", "GateStats", "BudgetExhausted", "Slot", "use_gate", "active_gate", "throttle_of",
           "retry_after_seconds", "retry_delay", "DECREASE", "PROBE_GROWTH", "MAX_PROBE_WINDOWS", "THROTTLE_STATUSES"]

T = TypeVar("T")

THROTTLE_STATUSES = frozenset({429, 503})
# Multiplicative decrease per congestion window. 0.5 (TCP's) halves the rate every time a probe overshoots a
# fixed server capacity by one request; 0.75 backs off clearly and keeps most of the rate.
DECREASE = 0.75
PROBE_GROWTH = 4  # a probe that fails again waits this many times longer (1, 4, 16, 64 windows)
MAX_PROBE_WINDOWS = 64  # longest run of windows (of successes) before the limit probes a throttled level again
RATE_WINDOW_S = 10.0  # calls/s and tokens/s are measured over the last this-many seconds
HISTORY_MAX = 2000  # limit_history keeps at most this many points (thinned evenly, first and last kept)
MAX_BACKOFF_S = 60.0


class BudgetExhausted(MmatError):
    """No model request is sent any more: a budget is spent (``reason`` ``max_calls`` or ``max_cost``) or
    the gate was closed (``reason`` is what ``close()`` was given). ``last_error`` is the failure of the
    attempt that could not be retried, when one came first."""

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or f"no more model requests: {reason}")
        self.reason = reason
        self.last_error: BaseException | None = None

    def __reduce__(self):  # crosses to worker processes (mmat.pipeline.process_executor) with its reason
        return (BudgetExhausted, (self.reason, str(self)))


class GateStats(BaseModel):
    """What the gate has done so far (``LMGate.snapshot()``); JSON-able, stored with a run's summary."""

    concurrency: int = Field(description="The ceiling the limit never exceeds (--concurrency).")
    limit: int = Field(description="Requests allowed in flight now.")
    in_flight: int = Field(description="Requests sent and not answered yet.")
    waiting: int = Field(description="Requests waiting for a slot.")
    calls: int = Field(description="Requests sent (every attempt, retries included; cache hits are not requests).")
    succeeded: int = Field(description="Requests answered without an error.")
    throttled: int = Field(description="Requests answered 429 or 503.")
    failed: int = Field(description="Requests that failed otherwise (timeouts, 5xx, 4xx, transport errors).")
    tokens: int = Field(description="Prompt plus completion tokens of the answered requests.")
    cost: float = Field(description="Recorded cost in USD (requests whose price is unknown count 0).")
    unpriced: int = Field(description="Answered requests whose cost was unknown.")
    calls_per_s: float = Field(description=f"Answered requests per second over the last {RATE_WINDOW_S:g} s.")
    tokens_per_s: float = Field(description=f"Tokens per second over the last {RATE_WINDOW_S:g} s.")
    elapsed_s: float = Field(description="Seconds since the gate was made.")
    paused_s: float = Field(description="Seconds new requests still wait for a Retry-After.")
    max_calls: int | None = None
    max_cost: float | None = None
    stopped: str | None = Field(None, description="Why no more requests are sent (a budget or close()), or None.")
    limit_history: list[tuple[float, int]] = Field(description="(seconds since start, limit) at start and at each change.")


class Slot:
    """One request's place in the gate. ``with slot:`` holds it (acquiring first if needed) and releases it on
    exit: an exception leaving the block is classified (throttled or failed), otherwise the request counts as
    answered with what ``report()`` was told."""

    def __init__(self, gate: LMGate, seq: int = 0, weight: int = 1):
        self._gate = gate
        self.seq = seq  # 0: not acquired yet
        self.weight = weight  # requests it stands for (a call asking for n candidates may send n, one after another)
        self._released = False
        self._tokens = 0
        self._cost: float | None = None

    @property
    def gate(self) -> LMGate:
        """The gate this slot belongs to."""
        return self._gate

    def report(self, *, tokens: int = 0, cost: float | None = None) -> None:
        """The answered request's tokens and cost (None: price unknown)."""
        self._tokens, self._cost = int(tokens or 0), cost

    def __enter__(self) -> Slot:
        if not self.seq:
            self.seq = self._gate._acquire_seq(self.weight)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._gate._release(self, exc)

    async def __aenter__(self) -> Slot:
        if not self.seq:
            self.seq = await self._gate._aacquire_seq(self.weight)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._gate._release(self, exc)

    def refund(self) -> None:
        """Give back a slot that was acquired but whose request was never sent (it is not counted)."""
        self._gate._refund(self)


@dataclass(eq=False)
class _Waiter:
    event: threading.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    seq: int = 0
    weight: int = 1
    error: BudgetExhausted | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # its event loop is closed: nobody is waiting any more
            pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class LMGate:
    """Admits model requests under an adaptive concurrency limit and budgets (see the module docstring).

    Thread-safe; sync callers block in ``slot()``/``acquire()``, async callers await ``aslot()``/``aacquire()``.
    Waiters are served first come, first served."""

    def __init__(self, concurrency: int, *, max_calls: int | None = None, max_cost: float | None = None,
                 decrease: float = DECREASE, clock: Callable[[], float] = time.monotonic):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 0):
            raise ConfigError(f"max_calls must be a whole number >= 0, got {max_calls!r}")
        if max_cost is not None and (not isinstance(max_cost, (int, float)) or not math.isfinite(max_cost) or max_cost < 0):
            raise ConfigError(f"max_cost must be a number of USD >= 0, got {max_cost!r}")
        if not 0 < decrease < 1:
            raise ConfigError(f"decrease must be between 0 and 1, got {decrease!r}")
        self.concurrency = concurrency
        self.max_calls = max_calls
        self.max_cost = float(max_cost) if max_cost is not None else None
        self._decrease = decrease
        self._clock = clock
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._limit = concurrency
        self._in_flight = 0
        self._calls = 0  # requests admitted (a refund takes one back)
        self._seq = 0  # the number of the latest admission (never reused: it says which window a request is from)
        self._succeeded = self._throttled = self._failed = self._tokens = self._unpriced = 0
        self._cost = 0.0
        self._cut_seq = 0  # requests admitted up to the last cut belong to the window that was cut
        self._good = 0  # successes since the last change of the limit
        self._ceiling: int | None = None  # the limit that was throttled last
        self._probe_windows = 1
        self._pause_until = -math.inf
        self._timer: threading.Timer | None = None
        self._closed: str | None = None
        self._t0 = clock()
        self._history: list[tuple[float, int]] = [(0.0, concurrency)]
        self._recent: deque[tuple[float, int]] = deque()

    # --- admitting ------------------------------------------------------------------------------
    def slot(self) -> Slot:
        """``with gate.slot():`` wait for a slot under the current limit, hold it for one request. Raises
        BudgetExhausted (nothing sent) once a budget is spent or the gate is closed."""
        return Slot(self)

    def aslot(self) -> Slot:
        """``async with gate.aslot():`` the same, awaiting instead of blocking the thread."""
        return Slot(self)

    def acquire(self, weight: int = 1) -> Slot:
        """A slot already held (blocks until then); release it with ``with slot:`` around the request.
        ``weight``: how many requests it is charged to ``max_calls`` for (one slot of concurrency)."""
        return Slot(self, self._acquire_seq(weight), weight)

    async def aacquire(self, weight: int = 1) -> Slot:
        """Async ``acquire``."""
        return Slot(self, await self._aacquire_seq(weight), weight)

    def _acquire_seq(self, weight: int = 1) -> int:
        with self._lock:
            seq = self._try_admit_locked(weight)
            if seq:
                return seq
            waiter = _Waiter(event=threading.Event(), weight=weight)
            self._waiters.append(waiter)
            self._dispatch_locked()
        try:
            waiter.event.wait()
        except BaseException:  # Ctrl-C while waiting: leave the queue, give back a slot handed over meanwhile
            self._abandon(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    async def _aacquire_seq(self, weight: int = 1) -> int:
        loop = asyncio.get_running_loop()
        with self._lock:
            seq = self._try_admit_locked(weight)
            if seq:
                return seq
            waiter = _Waiter(loop=loop, future=loop.create_future(), weight=weight)
            self._waiters.append(waiter)
            self._dispatch_locked()
        try:
            await waiter.future
        except BaseException:  # cancelled while waiting
            self._abandon(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    def _try_admit_locked(self, weight: int) -> int:
        """Admit now (a sequence number) when nobody is queued ahead and there is room; raise when stopped."""
        reason = self._stop_reason_locked(weight)
        if reason is not None:
            raise self._exhausted_locked(reason)
        if not self._waiters and self._room_locked(self._clock()):
            return self._admit_locked(weight)
        return 0

    def _room_locked(self, now: float) -> bool:
        return self._in_flight < self._limit and now >= self._pause_until

    def _admit_locked(self, weight: int) -> int:
        self._calls += weight
        self._seq += 1
        self._in_flight += 1
        return self._seq

    def _abandon(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
        if waiter.seq:
            self._refund(Slot(self, waiter.seq, waiter.weight))

    def _dispatch_locked(self) -> None:
        """Hand free slots to waiters in order; fail them all once no more requests may be sent."""
        now = self._clock()
        while self._waiters:
            reason = self._stop_reason_locked()
            if reason is not None:
                error_waiters, self._waiters = list(self._waiters), deque()
                for waiter in error_waiters:
                    waiter.error = self._exhausted_locked(reason)
                    waiter.wake()
                return
            if not self._room_locked(now):
                break
            waiter = self._waiters.popleft()
            reason = self._stop_reason_locked(waiter.weight)
            if reason is not None:  # more requests than the budget has left: this one alone is refused
                waiter.error = self._exhausted_locked(reason)
            else:
                waiter.seq = self._admit_locked(waiter.weight)
            waiter.wake()
        self._schedule_locked()

    def _schedule_locked(self) -> None:
        """While waiters wait only for a Retry-After pause to pass, a timer wakes the queue when it has."""
        if not self._waiters or self._closed is not None:
            return
        delay = self._pause_until - self._clock()
        if delay <= 0 or self._timer is not None:
            return
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            self._dispatch_locked()

    # --- budgets --------------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """Send no more requests: every waiter and every later request raises BudgetExhausted(reason).
        Requests in flight finish. The first reason given (or a budget spent before it) is kept."""
        with self._lock:
            if self._closed is None:
                self._closed = self._stop_reason_locked() or str(reason)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._dispatch_locked()

    def _stop_reason_locked(self, weight: int = 1) -> str | None:
        if self._closed is not None:
            return self._closed
        if self.max_calls is not None and self._calls + weight > self.max_calls:
            return "max_calls"
        if self.max_cost is not None and self._cost >= self.max_cost:
            return "max_cost"
        return None

    def _exhausted_locked(self, reason: str) -> BudgetExhausted:
        if reason == "max_calls":
            message = f"the call budget is spent: {self._calls} model requests sent (max_calls {self.max_calls})"
        elif reason == "max_cost":
            message = f"the cost budget is spent: ${self._cost:.6g} recorded (max_cost ${self.max_cost:g})"
        else:
            message = f"no more model requests: {reason}"
        return BudgetExhausted(reason, message)

    # --- outcomes and AIMD ----------------------------------------------------------------------
    def _release(self, slot: Slot, exc: BaseException | None) -> None:
        throttled, retry_after = throttle_of(exc) if exc is not None else (False, None)
        self._settle(slot, exc is None, throttled, retry_after)

    def _settle(self, slot: Slot, ok: bool, throttled: bool, retry_after: float | None) -> None:
        """Release ``slot`` with its outcome: answered (``ok``), throttled (with its Retry-After) or failed."""
        with self._lock:
            if slot._released or not slot.seq:
                return
            slot._released = True
            full = self._in_flight >= self._limit or bool(self._waiters)  # was the limit in use?
            self._in_flight -= 1
            now = self._clock()
            if ok:
                self._succeeded += 1
                self._tokens += slot._tokens
                if isinstance(slot._cost, (int, float)) and math.isfinite(slot._cost):
                    self._cost += float(slot._cost)
                else:
                    self._unpriced += 1
                self._recent.append((now, slot._tokens))
                if full:
                    self._on_success_locked(slot.seq, now)
            elif throttled:
                self._throttled += 1
                self._on_throttle_locked(slot.seq, retry_after, now)
            else:
                self._failed += 1
            self._dispatch_locked()

    def _refund(self, slot: Slot) -> None:
        with self._lock:
            if slot._released or not slot.seq:
                return
            slot._released = True
            self._in_flight -= 1
            self._calls -= slot.weight
            self._dispatch_locked()

    def _on_throttle_locked(self, seq: int, retry_after: float | None, now: float) -> None:
        if retry_after is not None and retry_after > 0:
            self._pause_until = max(self._pause_until, now + retry_after)
        if seq <= self._cut_seq:
            return  # sent before the last cut: the same congestion window, already answered
        before = self._limit
        if self._ceiling is not None and before >= self._ceiling - 1:
            self._probe_windows = min(self._probe_windows * PROBE_GROWTH, MAX_PROBE_WINDOWS)  # about the same level again
        else:
            self._probe_windows = 1  # first throttle, or far lower than before: the server's capacity moved
        self._ceiling = before
        self._cut_seq = self._seq
        self._good = 0
        self._set_limit_locked(max(1, min(before - 1, math.floor(before * self._decrease))), now)

    def _on_success_locked(self, seq: int, now: float) -> None:
        if seq <= self._cut_seq or self._limit >= self.concurrency:
            return
        self._good += 1
        probing = self._ceiling is not None and self._limit + 1 >= self._ceiling  # a step to or past the throttled level
        if self._good < self._limit * (self._probe_windows if probing else 1):
            return
        self._good = 0
        self._set_limit_locked(self._limit + 1, now)
        if self._ceiling is not None and self._limit > self._ceiling:
            # a whole probe held above the throttled level: the server has room; probe the next level sooner
            self._ceiling, self._probe_windows = self._limit, max(1, self._probe_windows // 2)

    def _set_limit_locked(self, limit: int, now: float) -> None:
        limit = max(1, min(self.concurrency, limit))
        if limit == self._limit:
            return
        self._limit = limit
        self._history.append((round(now - self._t0, 6), limit))
        if len(self._history) > HISTORY_MAX:
            self._history = self._history[:-1:2] + [self._history[-1]]

    # --- stats ------------------------------------------------------------------------------------
    def snapshot(self) -> GateStats:
        """The gate's figures now (a copy)."""
        with self._lock:
            now = self._clock()
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            elapsed = now - self._t0
            span = min(RATE_WINDOW_S, elapsed) or 1.0
            return GateStats(
                concurrency=self.concurrency, limit=self._limit, in_flight=self._in_flight, waiting=len(self._waiters),
                calls=self._calls, succeeded=self._succeeded, throttled=self._throttled, failed=self._failed,
                tokens=self._tokens, cost=self._cost, unpriced=self._unpriced,
                calls_per_s=len(self._recent) / span, tokens_per_s=sum(t for _, t in self._recent) / span,
                elapsed_s=elapsed, paused_s=max(0.0, self._pause_until - now), max_calls=self.max_calls,
                max_cost=self.max_cost, stopped=self._stop_reason_locked(), limit_history=list(self._history))

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return self._limit

    # --- requests with retries through the gate -------------------------------------------------
    def attempts(self, send: Callable[[], T], *, retries: int, first: Slot | None = None, weight: int = 1,
                 sleep: Callable[[float], None] = time.sleep) -> T:
        """Run ``send`` (one request, measured) until it succeeds, up to ``retries`` retries of transient
        failures, each attempt in its own slot; back off between them honouring Retry-After. The last
        failure is raised as it was; BudgetExhausted when the budget ends the retries."""
        slot = first or self.acquire(weight)
        attempt = 0
        while True:
            try:
                with slot:
                    out, tokens, cost = _measured(send)
                    slot.report(tokens=tokens, cost=cost)
                return out
            except Exception as exc:
                if attempt >= retries or not _retryable(exc):
                    raise
                failure = exc
            sleep(retry_delay(failure, attempt))
            attempt += 1
            slot = self._next_slot(failure, weight)

    async def aattempts(self, send: Callable[[], Awaitable[T]], *, retries: int, first: Slot | None = None,
                        weight: int = 1) -> T:
        """Async ``attempts``."""
        slot = first or await self.aacquire(weight)
        attempt = 0
        while True:
            try:
                async with slot:
                    out, tokens, cost = await _ameasured(send)
                    slot.report(tokens=tokens, cost=cost)
                return out
            except Exception as exc:
                if attempt >= retries or not _retryable(exc):
                    raise
                failure = exc
            await asyncio.sleep(retry_delay(failure, attempt))
            attempt += 1
            try:
                slot = await self.aacquire(weight)
            except BudgetExhausted as e:
                e.last_error = failure
                raise

    def _next_slot(self, failure: BaseException, weight: int) -> Slot:
        try:
            return self.acquire(weight)
        except BudgetExhausted as e:  # raised outside the except block: classify() sees the budget, not the 429
            e.last_error = failure
            raise


# --- the process-wide gate ---------------------------------------------------------------------------
_active: LMGate | None = None
_active_lock = threading.Lock()


@contextlib.contextmanager
def use_gate(gate: LMGate | None) -> Iterator[LMGate | None]:
    """Inside, every LM request of this process (all threads) goes through ``gate`` (None: no gate);
    the previous gate is restored on exit."""
    global _active
    if gate is not None and not isinstance(gate, LMGate):
        raise TypeError(f"use_gate takes an LMGate or None, not {type(gate).__name__}")
    with _active_lock:
        previous, _active = _active, gate
    try:
        yield gate
    finally:
        with _active_lock:
            _active = previous


def active_gate() -> LMGate | None:
    """The gate requests go through now, or None."""
    return _active


# --- classifying failures ----------------------------------------------------------------------------
def retry_after_seconds(value: Any, *, now: datetime | None = None) -> float | None:
    """A Retry-After value in seconds (>= 0): a number, a numeric string, or an HTTP-date; None when absent
    or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return max(0.0, float(value)) if math.isfinite(value) else None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    for name in ("status", "status_code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _header_retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        return retry_after_seconds(headers.get("retry-after") or headers.get("Retry-After"))
    except AttributeError:
        return None


def throttle_of(exc: BaseException | None) -> tuple[bool, float | None]:
    """(throttled, Retry-After seconds) for a failed request: HTTP 429/503 or DSPy's LMRateLimitError,
    anywhere in the exception's chain."""
    for e in _chain(exc):
        rate_limited = type(e).__name__ in ("LMRateLimitError", "RateLimitError")
        if rate_limited or _status(e) in THROTTLE_STATUSES:
            hint = retry_after_seconds(getattr(e, "retry_after", None))
            return True, hint if hint is not None else _header_retry_after(e)
    return False, None


def retry_delay(exc: BaseException, attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: the server's Retry-After when it sent one, else
    exponential backoff (1, 2, 4, ... s, at most ``MAX_BACKOFF_S``), as DSPy's own retries wait."""
    for e in _chain(exc):
        hint = retry_after_seconds(getattr(e, "retry_after", None))
        if hint is None:
            hint = _header_retry_after(e)
        if hint is not None:
            return hint
    return min(2.0 ** min(attempt, 6), MAX_BACKOFF_S)


def _retryable(exc: BaseException) -> bool:
    from dspy.utils.exceptions import is_retryable_lm_error

    return is_retryable_lm_error(exc)


# --- measuring one request ---------------------------------------------------------------------------
class _Usage:
    """DSPy usage tracker for one attempt: sums the reported tokens, forwards to the tracker around it."""

    def __init__(self, parent: Any):
        self.parent = parent
        self.tokens = 0

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        usage = usage_entry or {}
        total = usage.get("total_tokens")
        if not isinstance(total, (int, float)):
            total = sum(usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens")
                        if isinstance(usage.get(k) or 0, (int, float)))
        self.tokens += int(total or 0)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)


class _Sink:
    """Stands in DSPy's caller-module stack during one attempt to receive its history entry (the cost)."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []


@contextlib.contextmanager
def _measure() -> Iterator[tuple[_Usage, _Sink]]:
    import dspy
    from dspy.dsp.utils.settings import settings

    usage, sink = _Usage(settings.usage_tracker), _Sink()
    with dspy.context(usage_tracker=usage, caller_modules=[*(settings.caller_modules or []), sink]):
        yield usage, sink


def _cost(sink: _Sink) -> float | None:
    cost = sink.history[-1].get("cost") if sink.history else None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def _measured(send: Callable[[], T]) -> tuple[T, int, float | None]:
    with _measure() as (usage, sink):
        out = send()
    return out, usage.tokens, _cost(sink)


async def _ameasured(send: Callable[[], Awaitable[T]]) -> tuple[T, int, float | None]:
    with _measure() as (usage, sink):
        out = await send()
    return out, usage.tokens, _cost(sink)
