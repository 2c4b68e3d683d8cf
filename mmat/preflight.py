"""Talk to a model server before the work starts, and say in one line what went wrong when it fails.

Preflight (``check_server``): with an ``api_base``, ``GET <api_base>/models`` once per server (cached
for the process) tells apart an unreachable server, a wrong path (no ``/v1``) and a model id the
server does not serve (the served ids are listed). Loopback and private servers get a placeholder key
(``PLACEHOLDER_KEY``) instead of a demand for one.

After a failure (``describe_failure``): any exception a DSPy/litellm call raised becomes a
``Failure``: a stable code (``rate-limited``, ``server-error``, ``timeout``, ``unreachable``,
``malformed-reply``, ``empty-reply``, ``unparsable-reply``, ``invalid-request``, ``auth``), whether the
user must fix something (``fatal``: the run stops) or it is the server's bad moment (the stage fails,
the run goes on), and a one-line message with the server's words and the fix, naming the flag of the
role whose model failed in the command in use (``--teacher``, ``--controller``, ...).

No message ever contains a key: keys are read from the environment only to be sent.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from mmat.config import ROLES, Settings
from mmat.errors import ConfigError, ModelOutputError, ModelUnavailableError

__all__ = [
    "PLACEHOLDER_KEY", "LISTING_PROVIDERS", "Failure", "validate_api_base", "is_private_base", "served_id",
    "role_fix", "roles_for", "check_server", "list_served", "describe_failure", "server_message", "key_for",
    "clear_cache", "smoke_test", "served_models_or_roles",
]

PLACEHOLDER_KEY = "mmat-no-key-needed"
# OpenAI-compatible providers whose servers list their models at GET <api_base>/models.
LISTING_PROVIDERS = {"hosted_vllm", "openai", "openai_like", "lm_studio", "litellm_proxy"}
ROLE_FLAGS = {"teacher": "--teacher", "controller": "--controller", "verifier": "--verifier", "judge": "--judge",
              "vqa_model": "--vqa-model"}
# The model flags each command has (a role without a flag there is fixed through MMAT_* or mmat.toml).
COMMAND_FLAGS = {
    "synth": {"teacher", "controller", "verifier"}, "optimize": {"teacher", "controller", "verifier"},
    "eval": {"controller"}, "prefs": {"controller", "judge"}, "demo": {"teacher"},
}
_LIST_TIMEOUT_S = 10.0
_MESSAGE_CHARS = 300

_lock = threading.Lock()
_listings: dict[str, list[str]] = {}


def clear_cache() -> None:
    """Forget the model listings fetched so far (tests; a server restarted with other models)."""
    with _lock:
        _listings.clear()


# --- URLs and keys ------------------------------------------------------------------------------------
def validate_api_base(url: str, flag: str = "--api-base") -> str:
    """``url`` if it is an http(s) URL with a host; else ConfigError naming the flag."""
    parsed = urlparse(url.strip()) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname or " " in url.strip():
        raise ConfigError(f"{flag} {url!r} is not an http(s) URL: pass e.g. http://127.0.0.1:8000/v1")
    try:
        parsed.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise ConfigError(f"{flag} {url!r} has an invalid port: pass e.g. http://127.0.0.1:8000/v1") from None
    return url.strip()


def is_private_base(url: str | None) -> bool:
    """Loopback, private-network and single-label hosts (``localhost``, ``10.0.0.5``, ``vllm``): servers the
    user runs, which need no real key. Decided from the URL alone (no DNS lookup)."""
    if not url:
        return False
    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost" or host.endswith(".localhost") or (host and "." not in host and ":" not in host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _provider_key_env(provider: str) -> str:
    return "OPENAI_API_KEY" if provider in ("openai", "openai_like") else f"{provider.upper()}_API_KEY"


def key_for(provider: str, api_base: str | None) -> str | None:
    """The key to send: the provider's key variable when set, a placeholder for a private server, else None."""
    key = os.environ.get(_provider_key_env(provider))
    if key:
        return key
    return PLACEHOLDER_KEY if is_private_base(api_base) else None


def served_id(model: str) -> str:
    """The model id a server sees for a litellm string (``hosted_vllm/SmolLM2`` -> ``SmolLM2``)."""
    return model.split("/", 1)[1] if "/" in model else model


# --- roles and fixes ------------------------------------------------------------------------------------
def roles_for(model: str | None, settings: Settings | None) -> list[str]:
    """The roles that use ``model``: those set to it explicitly first, then those that fall back to it."""
    if settings is None or not model:
        return []
    explicit = [r for r in ROLES if getattr(settings, r, None) == model]
    implied = [r for r in ROLES if r not in explicit and settings.role_model(r) == model]
    return explicit + implied


def _command_name(command: str | None) -> str:
    """``synth`` from ``mmat synth --tasks 3`` (or from click's ``cli synth`` command path)."""
    return next((w for w in (command or "").split() if w in COMMAND_FLAGS or w == "models"), "")


def role_fix(role: str | None, command: str | None, what: str = "another model") -> str:
    """How to choose another model for ``role`` in ``command``: its flag when the command has one."""
    if role is None:
        return f"use {what}"
    name = _command_name(command)
    if role in COMMAND_FLAGS.get(name, set()):
        return f"pass {ROLE_FLAGS[role]} {what}"
    return f"set MMAT_{role.upper()} (or {role} in mmat.toml) to {what}"


# --- listing ----------------------------------------------------------------------------------------------
def server_message(body: str | bytes | None) -> str:
    """The server's own words from an error body (OpenAI, vLLM and FastAPI shapes), on one line."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = (body or "").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        for candidate in ((err.get("message") if isinstance(err, dict) else err), data.get("message"), data.get("detail")):
            if isinstance(candidate, str) and candidate.strip():
                text = candidate
                break
            if candidate:
                text = json.dumps(candidate)
                break
    one = " ".join(text.split())
    return one[:_MESSAGE_CHARS] + ("..." if len(one) > _MESSAGE_CHARS else "")


class _HTTPFailure(Exception):
    def __init__(self, url: str, status: int | None, message: str):
        super().__init__(message)
        self.url, self.status, self.message = url, status, message


def _get(url: str, key: str | None, timeout: float) -> Any:
    """GET a JSON document, never through a proxy (servers here are the user's own)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise _HTTPFailure(url, e.code, server_message(e.read())) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        reason = getattr(reason, "strerror", None) or str(reason) or type(e).__name__
        raise _HTTPFailure(url, None, reason) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise _HTTPFailure(url, 200, f"the reply is not JSON ({server_message(raw)[:80]!r})") from None


def list_served(api_base: str, *, key: str | None = None, timeout: float = _LIST_TIMEOUT_S) -> list[str]:
    """The model ids ``GET <api_base>/models`` lists (cached per api_base). Raises _HTTPFailure."""
    base = api_base.rstrip("/")
    with _lock:
        if base in _listings:
            return _listings[base]
    data = _get(f"{base}/models", key, timeout)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise _HTTPFailure(f"{base}/models", 200, "the reply has no 'data' list of models")
    ids = [str(e.get("id")) for e in entries if isinstance(e, dict) and e.get("id")]
    with _lock:
        _listings[base] = ids
    return ids


def _head(role: str | None, model: str, url: str) -> str:
    return f"{role + ' ' if role else ''}model '{model}' at {url}"


def check_server(model: str, provider: str, api_base: str, settings: Settings, *, role: str | None = None,
                 command: str | None = None) -> list[str]:
    """Preflight one model on its server; returns the served ids. Raises ModelUnavailableError with the fix."""
    role = role or (roles_for(model, settings) or [None])[0]
    validate_api_base(api_base)
    if provider not in LISTING_PROVIDERS:
        return []
    key = key_for(provider, api_base)
    timeout = min(settings.request_timeout_s, _LIST_TIMEOUT_S)
    base = api_base.rstrip("/")
    try:
        ids = list_served(base, key=key, timeout=timeout)
    except _HTTPFailure as e:
        raise ModelUnavailableError(_listing_error(e, role, model, base, key, timeout, command)) from None
    wanted = served_id(model)
    if ids and wanted not in ids:
        served = ", ".join(f"'{i}'" for i in ids[:10])
        prefix = model.split("/", 1)[0]
        raise ModelUnavailableError(
            f"{_head(role, model, base)}: the server serves {served}, not '{wanted}': "
            f"{role_fix(role, command, f'{prefix}/{ids[0]}')}"
        )
    return ids


def _listing_error(e: _HTTPFailure, role: str | None, model: str | None, base: str, key: str | None, timeout: float,
                   command: str | None) -> str:
    head = _head(role, model, base) if model else f"the server at {base}"
    if e.status is None:
        return f"{head}: cannot reach the server ({e.message}): start it or fix --api-base"
    if e.status in (401, 403):
        variable = _provider_key_env(model.split("/", 1)[0]) if model else "the provider's API key variable"
        return f"{head}: HTTP {e.status}: {e.message}: set {variable} to the server's key"
    if e.status == 404 and not base.endswith("/v1"):
        try:
            list_served(f"{base}/v1", key=key, timeout=timeout)
            return f"{head}: HTTP 404: {e.message}: add /v1 to --api-base ({base}/v1)"
        except _HTTPFailure:
            pass
    if e.status == 404:
        return (f"{head}: HTTP 404: {e.message} (GET {e.url}): --api-base must be the server's OpenAI-compatible "
                "root, e.g. http://127.0.0.1:8000/v1")
    return f"{head}: HTTP {e.status}: {e.message} (GET {e.url}): check the server's log"


# --- failures -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """What went wrong in one stage: a stable ``code`` (group by it), a one-line ``message``, and whether
    the user must act before anything can work (``fatal``)."""

    code: str
    message: str
    fatal: bool = False
    role: str | None = None
    model: str | None = None


def _chain(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _lm_error(exc: BaseException):
    from dspy.utils.exceptions import LMError

    return next((e for e in _chain(exc) if isinstance(e, LMError)), None)


def _one_line(text: str) -> str:
    one = " ".join(str(text).split())
    return one[:_MESSAGE_CHARS] + ("..." if len(one) > _MESSAGE_CHARS else "")


def _where(model: str | None, settings: Settings | None) -> str:
    if not model or settings is None:
        return ""
    if not settings.api_base:
        return ""
    from mmat.lm import capabilities

    try:
        in_process = capabilities(model, settings).in_process
    except ModelUnavailableError:  # a model string no provider knows
        in_process = False
    return "" if in_process else settings.api_base


def describe_failure(exc: BaseException, settings: Settings | None = None, command: str | None = None) -> Failure | None:
    """A Failure for an exception an LM call (or parsing its reply) raised; None for anything else (a bug)."""
    from dspy.utils import exceptions as dx

    lm_error = _lm_error(exc)
    if lm_error is None:
        parse = next((e for e in _chain(exc) if isinstance(e, (ModelOutputError, dx.AdapterParseError))), None)
        if parse is None:
            return None
        text = _one_line(str(parse))
        code = "empty-reply" if "empty or null response" in str(parse) else "unparsable-reply"
        return Failure(code, text)
    model = getattr(lm_error, "model", None)
    role = (roles_for(model, settings) or [None])[0]
    url = _where(model, settings)
    head = _head(role, model or "?", url) if url else f"{role + ' ' if role else ''}model '{model}'"
    status = getattr(lm_error, "status", None)
    said = _one_line(getattr(lm_error, "message", "") or "")
    if status is not None:
        said = said.removesuffix(f" ({status})")  # lm15 appends the provider's code
    retries = settings.num_retries if settings is not None else None
    after = f" after {retries} retries" if retries else ""
    http = f"HTTP {status}: " if status else ""
    said_part = said or "(the server gave no message)"
    if isinstance(lm_error, dx.LMRateLimitError):
        return Failure("rate-limited", f"{head}: {http}{said_part}{after}: lower --concurrency or raise num_retries", role=role, model=model)
    if isinstance(lm_error, dx.LMAuthError):
        return Failure("auth", f"{head}: {http}{said_part}: set the server's key in the environment", True, role, model)
    if isinstance(lm_error, (dx.LMTimeoutError,)) or (isinstance(lm_error, dx.LMTransportError) and "timed out" in said):
        limit = settings.request_timeout_s if settings is not None else None
        return Failure("timeout", f"{head}: no reply within {limit:g} s{after}: raise request_timeout_s (MMAT_REQUEST_TIMEOUT_S) "
                       "or use a faster server" if limit else f"{head}: timed out{after}", role=role, model=model)
    if isinstance(lm_error, dx.LMTransportError):
        return Failure("unreachable", f"{head}: cannot reach the server ({said_part}){after}: start it or fix --api-base", role=role, model=model)
    if isinstance(lm_error, dx.LMServerError) or (status is not None and status >= 500):
        return Failure("server-error", f"{head}: {http}{said_part}{after}: check the server's log", role=role, model=model)
    if isinstance(lm_error, dx.LMInvalidRequestError) or (status is not None and 400 <= status < 500):
        fix = _diagnose(model, role, settings, command) or (
            f"{role_fix(role, command)} or fix the request the server refused" if role else "fix the request the server refused")
        return Failure("invalid-request", f"{head}: {http}{said_part}: {fix}", True, role, model)
    if isinstance(lm_error, dx.LMProviderError) and "not JSON" in said:
        return Failure("malformed-reply", f"{head}: the reply is not JSON ({said_part})", role=role, model=model)
    if isinstance(lm_error, (dx.LMConfigurationError, dx.LMUnsupportedFeatureError)):
        return Failure("config", f"{head}: {said_part}", True, role, model)
    return Failure("provider-error", f"{head}: {http}{said_part}", role=role, model=model)


def _diagnose(model: str | None, role: str | None, settings: Settings | None, command: str | None) -> str | None:
    """After a 4xx mid-run the error body is gone: ask the server's listing what is wrong (wrong path or id)."""
    if not model or settings is None or not settings.api_base:
        return None
    provider = model.split("/", 1)[0]
    clear_cache()
    try:
        check_server(model, provider, settings.api_base, settings, role=role, command=command)
    except (ModelUnavailableError, ConfigError) as e:
        text = str(e)
        return text.split(": ", 1)[-1]
    return None


# --- the one-call smoke test of `mmat models --check` ----------------------------------------------------
def smoke_test(model: str, settings: Settings) -> dict[str, Any]:
    """Preflight ``model`` (server, path, id, structured-output probe afresh), then one tiny call: did the
    reply parse, how long did it take. Returns a row for ``mmat models --check``; never raises for a model
    problem (the row says it)."""
    import time

    import dspy
    from dspy.utils.exceptions import AdapterParseError, LMError

    from mmat.errors import MmatError
    from mmat.lm import adapter_for, build_lm, capabilities, check_model
    from mmat.structured import forget

    row: dict[str, Any] = {"model": model, "ok": False, "structured_output": None, "parse": None, "latency_ms": None,
                           "message": ""}
    forget()
    clear_cache()
    try:
        check_model(model, settings, command="models")
        lm = build_lm(model, settings=settings, cache=False, num_retries=0, temperature=0.0, max_tokens=64)
        adapter = adapter_for(model)
    except MmatError as e:
        row["message"] = str(e)
        return row
    from mmat.structured import resolved

    native = capabilities(model, settings).native_structured
    row["structured_output"] = "native" if native else (resolved(model) or ("off",))[0]

    class SmokeCheck(dspy.Signature):
        """Answer the question with one number."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    started = time.perf_counter()
    try:
        with dspy.context(lm=lm, adapter=adapter):
            answer = dspy.Predict(SmokeCheck)(question="What is 2 + 3?").answer
        row.update(ok=True, parse="ok", message=f"answered {' '.join(str(answer).split())[:40]!r}")
    except AdapterParseError:
        row.update(ok=True, parse="failed", message="the reply did not fit the requested fields")
    except LMError as e:
        failure = describe_failure(e, settings, "models")
        row["message"] = failure.message if failure else str(e)
    except MmatError as e:
        row["message"] = str(e)
    row["latency_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
    return row


def served_models_or_roles(settings: Settings) -> list[str]:
    """What `mmat models --check` checks without a MODEL: every id the api_base serves (as
    ``hosted_vllm/<id>``), else the configured roles' models."""
    if settings.api_base:
        validate_api_base(settings.api_base)
        try:
            ids = list_served(settings.api_base.rstrip("/"), key=key_for("hosted_vllm", settings.api_base),
                              timeout=min(settings.request_timeout_s, _LIST_TIMEOUT_S))
        except _HTTPFailure as e:
            base = settings.api_base.rstrip("/")
            raise ModelUnavailableError(_listing_error(e, None, None, base, None, _LIST_TIMEOUT_S, "models")) from None
        if ids:
            return [f"hosted_vllm/{i}" for i in ids]
    return list(dict.fromkeys(settings.role_model(r) for r in ("teacher", "controller", "verifier", "judge")))
