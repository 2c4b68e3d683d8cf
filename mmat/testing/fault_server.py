"""A loopback OpenAI-compatible server that answers from mmat's scripted world and injects faults.

It binds 127.0.0.1 only. Chat completions for a served model id (``teacher``, ``verifier``, ``agent``
by default: use ``hosted_vllm/teacher`` with ``api_base=server.api_base``) are answered by the
scripted role functions; a *plan* decides, per request, whether to answer or fail instead:

    with FaultServer(plan=fail_from(5, Fault.status_code(500))) as server:
        settings = load_settings(teacher="hosted_vllm/teacher", api_base=server.api_base, ...)

Faults: an HTTP status with the server's own error body (and an optional ``Retry-After``), a reply that
arrives after ``delay_s`` (a timeout for a short client timeout), a body that is not JSON, a reply with
an empty ``choices`` list, and a reply whose text fits no requested field. A rate limiter, as a hosted API
or a loaded vLLM has one: with ``max_concurrent=N`` a chat request arriving while N are being answered gets
429 with ``Retry-After: throttle_retry_after`` (seconds or an HTTP-date string). Latency is a number of
seconds or a function drawing one per request. Errors use the OpenAI envelope
(``{"error": {"message": ...}}``, as current vLLM answers). Requests for a model the server does not
serve get a 404 naming the served ids, paths outside ``/v1`` a 404
``Not Found`` (as FastAPI answers). Every request is kept in ``server.requests`` (headers included, so a
test can check which key was sent), and every chat request's arrival, answer and status in
``server.events`` (monotonic clock), with the most answered at once in ``server.peak_active``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from mmat.testing import scripted
from mmat.testing.dummy import format_chat, format_json, output_fields

__all__ = ["Fault", "FaultServer", "Plan", "always", "fail_first", "fail_from", "fail_models", "fail_numbers",
           "SCRIPTED_ROLES"]

Responder = Callable[[list[dict[str, Any]], list[str]], Mapping[str, Any]]
SCRIPTED_ROLES: dict[str, Responder] = {"teacher": scripted.teacher, "verifier": scripted.verifier, "agent": scripted.agent}


@dataclass(frozen=True)
class Fault:
    """What to do instead of answering one request."""

    kind: Literal["status", "delay", "malformed", "empty_choices", "unparsable"]
    status: int = 500
    message: str = "internal server error"
    retry_after: float | str | None = None  # seconds, or an HTTP-date string sent as it is
    delay_s: float = 0.0

    @classmethod
    def status_code(cls, status: int, message: str | None = None, retry_after: float | str | None = None) -> Fault:
        default = {429: "rate limit exceeded: slow down", 500: "internal server error", 503: "server overloaded"}
        return cls("status", status=status, message=message or default.get(status, f"error {status}"), retry_after=retry_after)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls("delay", delay_s=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        return cls("malformed")

    @classmethod
    def empty_choices(cls) -> Fault:
        return cls("empty_choices")

    @classmethod
    def unparsable(cls) -> Fault:
        return cls("unparsable")


# A plan sees the chat request number (1-based, across models) and the model id; None means answer.
Plan = Callable[[int, str], "Fault | None"]


def always(fault: Fault, models: set[str] | None = None) -> Plan:
    return lambda n, model: fault if models is None or model in models else None


def fail_first(count: int, fault: Fault) -> Plan:
    return lambda n, model: fault if n <= count else None


def fail_from(first: int, fault: Fault) -> Plan:
    return lambda n, model: fault if n >= first else None


def fail_models(models: set[str], fault: Fault) -> Plan:
    return always(fault, models)


def fail_numbers(numbers: set[int], fault: Fault) -> Plan:
    """A script: exactly the chat requests numbered in ``numbers`` (1-based) get ``fault``."""
    return lambda n, model: fault if n in numbers else None


def _retry_after_header(value: float | str | None) -> dict[str, str]:
    if value is None:
        return {}
    return {"Retry-After": value if isinstance(value, str) else f"{value:g}"}


@dataclass
class _State:
    served: list[str]
    responders: Mapping[str, Responder]
    plan: Plan | None
    structured_output: bool
    latency_s: float | Callable[[], float]
    max_concurrent: int | None = None
    throttle_retry_after: float | str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    chat_calls: int = 0
    active: int = 0
    peak_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    state: _State  # set on the subclass FaultServer builds
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # tests read requests, not access logs
        pass

    # --- replies -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: Mapping[str, str] = {}) -> None:
        self.replied_at = time.monotonic()  # before any byte goes out: the earliest the client can know
        self._leave()  # a request is no longer being answered once its reply starts (the client may send the next)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, cancel)
            pass

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _error(self, status: int, message: str, headers: Mapping[str, str] = {}) -> None:
        kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}.get(status, "InternalServerError")
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}}, headers)

    def _record(self, method: str, body: Any) -> None:
        with self.state.lock:
            self.state.requests.append({"method": method, "path": self.path, "headers": dict(self.headers), "body": body})

    # --- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record("GET", None)
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "mmat-fault-server"} for m in self.state.served]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        self._record("POST", body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._error(400, "request body must be a JSON object with messages")
            return
        model = str(body.get("model", ""))
        if model not in self.state.served:
            self._error(404, f"The model `{model}` does not exist. This server serves: {', '.join(self.state.served)}")
            return
        if body.get("response_format") and not self.state.structured_output:
            self._error(400, "response_format is not supported by this server")
            return
        state = self.state
        with state.lock:
            state.chat_calls += 1
            number = state.chat_calls
            event = {"n": number, "model": model, "arrived": time.monotonic(), "finished": None, "status": None}
            state.events.append(event)
            over = state.max_concurrent is not None and state.active >= state.max_concurrent
            if not over:
                state.active += 1
                state.peak_active = max(state.peak_active, state.active)
        if over:
            event["status"] = 429
            self._error(429, f"rate limit: at most {state.max_concurrent} concurrent requests",
                        _retry_after_header(state.throttle_retry_after))
            event["finished"] = self.replied_at
            return
        self.replied_at, self._active = None, True
        try:
            event["status"] = self._answer(body, model, number)
        finally:
            self._leave()
            event["finished"] = self.replied_at or time.monotonic()

    def _leave(self) -> None:
        if getattr(self, "_active", False):
            self._active = False
            with self.state.lock:
                self.state.active -= 1

    def _answer(self, body: dict[str, Any], model: str, number: int) -> int:
        """Answer one admitted chat request (as the plan says); returns the HTTP status sent."""
        fault = self.state.plan(number, model) if self.state.plan else None
        if fault is not None and fault.kind == "status":
            self._error(fault.status, fault.message, _retry_after_header(fault.retry_after))
            return fault.status
        latency = self.state.latency_s() if callable(self.state.latency_s) else self.state.latency_s
        if fault is not None and fault.kind == "delay":
            if self.state.stopping.wait(fault.delay_s):
                return 0
        elif latency and self.state.stopping.wait(latency):
            return 0
        if fault is not None and fault.kind == "malformed":
            self._send(200, b"<html>this is not JSON", content_type="text/html")
            return 200
        self._json(200, self._completion(body, model, fault))
        return 200

    def _completion(self, body: dict[str, Any], model: str, fault: Fault | None) -> dict[str, Any]:
        reply = {"id": f"chatcmpl-{self.state.chat_calls}", "object": "chat.completion", "created": int(time.time()),
                 "model": model, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        if fault is not None and fault.kind == "empty_choices":
            return reply
        if fault is not None and fault.kind == "unparsable":
            text = "I am not sure what you want me to write here."
        else:
            messages = body["messages"]
            fields = output_fields(messages, body.get("response_format"))
            responder = self.state.responders.get(model) or next(iter(self.state.responders.values()))
            outputs = _fit_schema(dict(responder(messages, fields)), body.get("response_format"))
            text = format_json(outputs) if body.get("response_format") or "JSON" in _last_text(messages) else format_chat(outputs)
        reply["choices"] = [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
        return reply


def _fit_schema(outputs: dict[str, Any], response_format: Any) -> dict[str, Any]:
    """What a schema-constrained server returns: exactly the schema's top-level properties (a missing
    string property gets a placeholder), as vLLM's guided decoding would."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return outputs
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties") or {}
    if not props:
        return outputs
    return {name: outputs.get(name, "yes") for name in props}


def _last_text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1].get("content") if messages else ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


class FaultServer:
    """``with FaultServer(...) as server:`` a threaded loopback server; ``server.api_base`` ends in ``/v1``."""

    def __init__(
        self,
        *,
        served: list[str] | None = None,
        responders: Mapping[str, Responder] | None = None,
        plan: Plan | None = None,
        structured_output: bool = True,
        latency_s: float | Callable[[], float] = 0.0,
        max_concurrent: int | None = None,
        throttle_retry_after: float | str | None = None,
    ):
        responders = dict(responders or SCRIPTED_ROLES)
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.state = _State(served=list(served or responders), responders=responders, plan=plan,
                            structured_output=structured_output, latency_s=latency_s, max_concurrent=max_concurrent,
                            throttle_retry_after=throttle_retry_after)
        handler = type("FaultHandler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.root}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def chat_calls(self) -> int:
        return self.state.chat_calls

    @property
    def events(self) -> list[dict[str, Any]]:
        """Each chat request: n, model, arrived, finished (when its reply started; monotonic seconds), status
        (0: abandoned at stop)."""
        with self.state.lock:
            return [dict(e) for e in self.state.events]

    @property
    def peak_active(self) -> int:
        """The most chat requests this server was answering at once (throttled ones not counted)."""
        return self.state.peak_active

    def set_plan(self, plan: Plan | None) -> None:
        """Change the plan (e.g. heal the server before a rerun); the call counter starts again."""
        with self.state.lock:
            self.state.plan = plan
            self.state.chat_calls = 0
            self.state.events = []
            self.state.peak_active = self.state.active

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
