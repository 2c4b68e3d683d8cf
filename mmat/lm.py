"""Build ``dspy.LM`` objects from litellm model strings, and register mmat's in-process providers.

Model strings are litellm strings everywhere: ``openai/gpt-4o-mini``, ``anthropic/...``,
``hosted_vllm/...`` with an api_base, ``ollama/...``. More providers join through ``register_provider``
(a litellm ``CustomLLM`` plus the ``ModelCapabilities`` of its models): mmat registers ``local/...``
(embedded and fine-tuned models, in-process, JSON-schema constrained) itself; ``mmat.testing`` registers
``dummy/...`` (scripted test models) when imported, and a user's plug-in (``mmat.plugins``) registers its
own the same way. No code path special-cases a vendor: programs ask ``capabilities(model)`` what a model
can do, and every model goes through the same ``build_lm``, DSPy adapters, cache and callbacks.

Bad input fails here, before any call, with one line that names the fix (``ModelUnavailableError``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel

from mmat.config import DEFAULT_TEACHER, Settings, load_settings
from mmat.errors import MmatError, ModelUnavailableError

# litellm fetches a remote price map when first imported unless told not to: set it before anyone does.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__all__ = [
    "configure_litellm",
    "register_providers",
    "register_provider",
    "registered_providers",
    "capabilities",
    "ModelCapabilities",
    "ModelProvider",
    "build_lm",
    "teacher",
    "check_model",
    "adapter_for",
    "structured_mode",
    "fresh_replies",
    "model_statuses",
    "ModelStatus",
    "register_model_info",
    "model_error",
    "provider_of",
    "API_PROVIDERS",
    "SERVER_PROVIDERS",
]

log = logging.getLogger(__name__)

LOCAL = "local"  # the built-in in-process provider (mmat.local)
# Providers that talk to a server the user runs: they need an api_base (default shown in the fix).
SERVER_PROVIDERS: dict[str, str] = {
    "hosted_vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434",
    "ollama_chat": "http://localhost:11434",
    "lm_studio": "http://localhost:1234/v1",
    "openai_like": "http://localhost:8000/v1",
}
# Providers whose requests settings.api_base redirects (OpenAI-compatible servers and proxies).
_API_BASE_PROVIDERS = {"openai", "litellm_proxy", *SERVER_PROVIDERS}
# Hosted APIs listed by `mmat models`, with a model string litellm knows (to ask which key it needs).
API_PROVIDERS: dict[str, str] = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-3-5-haiku-latest",
    "gemini": "gemini/gemini-2.0-flash",
    "groq": "groq/llama-3.1-8b-instant",
    "mistral": "mistral/mistral-small-latest",
    "together_ai": "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "openrouter": "openrouter/openai/gpt-4o-mini",
    "deepseek": "deepseek/deepseek-chat",
}
# litellm lists alternatives as if all were needed; the first one named here is the one to ask for.
_PREFERRED_KEYS = ("GEMINI_API_KEY",)
_CONNECT_TIMEOUT_S = 1.5
_ZERO_COST = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat"}

_lock = threading.RLock()
_builtins_registered = False
_registered_models: dict[str, bool] = {}  # model -> supports_response_schema as registered
_cache_dir: Path | None = None


def _quiet_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm fetches a price map at import
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logger = logging.getLogger(name)
        if logger.level != logging.ERROR:  # setLevel clears every logger's cache: not once per LM call
            logger.setLevel(logging.ERROR)
    return litellm


def register_model_info(model: str, *, supports_response_schema: bool = True) -> None:
    """Tell litellm a custom-provider model costs nothing and takes a JSON schema.

    Without ``supports_response_schema`` DSPy's JSONAdapter sends no schema to a custom provider, and
    the local model then decodes unconstrained (which a 135M model fails at).
    """
    with _lock:
        if _registered_models.get(model) is supports_response_schema:
            return
        litellm = _quiet_litellm()
        info = dict(_ZERO_COST, litellm_provider=model.split("/", 1)[0], supports_response_schema=supports_response_schema)
        litellm.register_model({model: info})
        _registered_models[model] = supports_response_schema


def _point_dspy_cache(settings: Settings) -> None:
    global _cache_dir
    target = (settings.cache_dir / "dspy").resolve()
    if _cache_dir == target:
        return
    import dspy

    target.mkdir(parents=True, exist_ok=True)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(target))
    _cache_dir = target


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model can do, as its provider declares it. Programs ask this (``capabilities(model)``)
    instead of reading the provider prefix of a model string.

    - ``in_process``: answered in this process: no API key or server to check, never retried (a failure
      there is not transient).
    - ``native_structured``: replies come in the format the DSPy adapter asks for without a probe
      (``structured_mode`` is ``native``); without it the ``structured_output`` probe decides.
    - ``constrained_decoding``: decoding is constrained to the JSON schema the adapter sends, so programs
      run it under DSPy's JSONAdapter (a native-structured model without it gets the ChatAdapter).
    - ``field_patterns``: it honours per-field regexes sent as ``mmat.local.FIELD_PATTERNS_PARAM`` (the
      agent's one-tool-call action grammar needs them).
    - ``action_grammar_by_default``: left free it writes prose where code is asked for, so
      ``agent_action_grammar = auto`` constrains it (the embedded 135M model and adapters built on it).
    - ``images``: it sees images in messages. ``None`` in a declaration means "ask litellm"
      (``litellm.supports_vision``); ``capabilities()`` always answers True or False.
    """

    in_process: bool = False
    native_structured: bool = False
    constrained_decoding: bool = False
    field_patterns: bool = False
    action_grammar_by_default: bool = False
    images: bool | None = None


Capabilities = ModelCapabilities | Callable[[str, "Settings | None"], ModelCapabilities]
Prepare = Callable[[str, Settings], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class ModelProvider:
    """A registered model provider: the litellm ``CustomLLM`` that answers ``<name>/...`` model strings,
    the capabilities of its models (fixed, or ``f(model, settings)``), and ``prepare(model, settings)``:
    the offline check of a model string before any call (raise ``ModelUnavailableError`` with the fix),
    returning the canonical model string and extra ``dspy.LM`` keyword arguments."""

    name: str
    handler: Any
    capabilities: Capabilities
    prepare: Prepare | None = None

    def capabilities_of(self, model: str, settings: Settings | None) -> ModelCapabilities:
        declared = self.capabilities
        return declared(model, settings) if callable(declared) else declared

    def prepared(self, model: str, settings: Settings) -> tuple[str, dict[str, Any]]:
        return self.prepare(model, settings) if self.prepare is not None else (model, {})


_providers: dict[str, ModelProvider] = {}


def register_provider(name: str, handler: Any, *, capabilities: Capabilities,
                      prepare: Prepare | None = None) -> ModelProvider:
    """Make ``<name>/...`` model strings reach ``handler`` (a ``litellm.CustomLLM``) with the given
    capabilities; the public hook for providers from plug-ins (``mmat.plugins``). Registering a name
    again replaces it; other entries of ``litellm.custom_provider_map`` are kept."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a provider name is a non-empty string without '/', got {name!r}")
    if not (isinstance(capabilities, ModelCapabilities) or callable(capabilities)):
        raise TypeError(f"capabilities of provider {name!r} must be a ModelCapabilities or a function of (model, settings)")
    provider = ModelProvider(name, handler, capabilities, prepare)
    with _lock:
        litellm = _quiet_litellm()
        kept = [p for p in litellm.custom_provider_map if p.get("provider") != name]
        litellm.custom_provider_map = [*kept, {"provider": name, "custom_handler": handler}]
        litellm.utils.custom_llm_setup()
        _providers[name] = provider
    return provider


def registered_providers() -> dict[str, ModelProvider]:
    """The providers registered through ``register_provider``, by name."""
    with _lock:
        return dict(_providers)


def _local_capabilities(model: str, settings: Settings | None) -> ModelCapabilities:
    from mmat.local.registry import embedded_based

    return ModelCapabilities(in_process=True, native_structured=True, constrained_decoding=True, field_patterns=True,
                             action_grammar_by_default=embedded_based(model, settings))


def _local_prepare(model: str, settings: Settings) -> tuple[str, dict[str, Any]]:
    from mmat.local.provider import HOME_PARAM
    from mmat.local.registry import resolve_local

    resolve_local(model, settings)
    model = _normalize_local(model)
    register_model_info(model)
    return model, {HOME_PARAM: str(settings.home.resolve())}


def register_providers() -> None:
    """Register mmat's built-in ``local`` provider and the embedded models' info (idempotent; other
    providers and entries of ``litellm.custom_provider_map`` are kept). Touches no files."""
    global _builtins_registered
    from mmat.local.registry import LOCAL_MODELS

    with _lock:
        if not _builtins_registered:
            from mmat.local.provider import LocalProvider

            register_provider(LOCAL, LocalProvider(), capabilities=_local_capabilities, prepare=_local_prepare)
            _builtins_registered = True
        for name in LOCAL_MODELS:
            register_model_info(f"{LOCAL}/{name}")


def configure_litellm(settings: Settings | None = None) -> None:
    """Idempotent global setup: offline price map, quiet logs, the built-in ``local`` provider and its
    model info, plug-ins (``mmat.plugins``: they may register providers), and DSPy's disk cache under
    ``settings.cache_dir / "dspy"`` (re-pointed when the home changes)."""
    from mmat.plugins import load_plugins

    load_plugins()  # before taking the lock: a plug-in registering a provider takes it too
    with _lock:
        register_providers()
        _point_dspy_cache(settings or load_settings())


def _registered(prefix: str) -> ModelProvider | None:
    with _lock:
        found = _providers.get(prefix)
    if found is None and prefix:
        if prefix == LOCAL:
            register_providers()
        else:
            from mmat.plugins import load_plugins

            load_plugins()  # a provider from a plug-in not loaded yet (a Python caller that skipped configure)
        with _lock:
            found = _providers.get(prefix)
    return found


def capabilities(model: str, settings: Settings | None = None) -> ModelCapabilities:
    """What ``model`` can do (see ``ModelCapabilities``): its provider's declaration, or for litellm's
    own providers a server/API model whose image support litellm knows (``supports_vision``).
    An unknown model string is a ModelUnavailableError."""
    provider = _registered(_prefix(model))
    if provider is None:
        provider_of(model)  # unknown to litellm too: raises with the fix
        declared = ModelCapabilities()
    else:
        declared = provider.capabilities_of(model, settings)
    if declared.images is None:
        declared = replace(declared, images=_litellm_vision(model))
    return declared


def _litellm_vision(model: str) -> bool:
    litellm = _quiet_litellm()
    try:
        return bool(litellm.supports_vision(model=model))
    except (ValueError, KeyError, TypeError) as e:  # litellm's lookup of an unknown provider string
        log.debug("supports_vision(%s) failed (%s); treating it as text-only", model, e)
        return False


def _prefix(model: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ModelUnavailableError(_unknown(str(model)))
    return model.split("/", 1)[0] if "/" in model else ""


def provider_of(model: str) -> str:
    """The provider a litellm model string routes to (``local``, ``openai``, a registered plug-in's, ...)."""
    prefix = _prefix(model)
    if _registered(prefix) is not None:
        return prefix
    litellm = _quiet_litellm()
    try:
        return litellm.get_llm_provider(model=model)[1]
    except (litellm.exceptions.BadRequestError, ValueError, KeyError):
        raise ModelUnavailableError(_unknown(model)) from None


def _unknown(model: str) -> str:
    return f"unknown model {model!r}: use a litellm model string such as openai/gpt-4o-mini, or {DEFAULT_TEACHER}"


def _api_base_for(provider: str, settings: Settings, opts: dict[str, Any]) -> str | None:
    explicit = opts.get("api_base") or opts.get("base_url")
    if explicit:
        return explicit
    if provider in _API_BASE_PROVIDERS and settings.api_base:
        return settings.api_base
    return os.environ.get(f"{provider.upper()}_API_BASE")


def _missing_keys(model: str, provider: str, api_base: str | None) -> list[str]:
    litellm = _quiet_litellm()
    env = litellm.validate_environment(model=model, api_base=api_base)
    if env.get("keys_in_environment"):
        return []
    missing = [k for k in env.get("missing_keys", []) if not (api_base and k.endswith(("_API_BASE", "_BASE_URL")))]
    preferred = [k for k in _PREFERRED_KEYS if k in missing]
    return preferred[:1] or missing


def _preflight(model: str, settings: Settings, opts: dict[str, Any]) -> str:
    """Offline checks; returns the provider. Raises ModelUnavailableError with the fix. A registered
    provider checks its own model strings (``prepare``); litellm's need their key or server address."""
    provider = provider_of(model)
    registered = _registered(provider)
    if registered is not None:
        registered.prepared(model, settings)
        return provider
    api_base = _api_base_for(provider, settings, opts)
    if provider in SERVER_PROVIDERS and not api_base:
        raise ModelUnavailableError(
            f"{model!r} needs the address of your {provider} server: set MMAT_API_BASE (or api_base in mmat.toml), "
            f"e.g. {SERVER_PROVIDERS[provider]}"
        )
    if api_base:
        from mmat.preflight import validate_api_base

        validate_api_base(api_base)
    if "api_key" not in opts and provider not in SERVER_PROVIDERS and not _private(api_base):
        missing = _missing_keys(model, provider, api_base)
        if missing:
            raise ModelUnavailableError(f"missing API key for {model!r}: set {' and '.join(missing)} or pass --teacher {DEFAULT_TEACHER}")
    return provider


def _private(api_base: str | None) -> bool:
    from mmat.preflight import is_private_base

    return is_private_base(api_base)


def _normalize_local(model: str) -> str:
    """``local/<relative path>`` -> absolute, so the model string means the same from any cwd."""
    from mmat.local.registry import LOCAL_MODELS

    name = model[len(LOCAL) + 1:]
    if name in LOCAL_MODELS:
        return model
    return f"{LOCAL}/{Path(name).expanduser().resolve()}"


# A redo of work whose replies were unreadable must not be served the same replies from DSPy's cache.
_fresh_round: contextvars.ContextVar[int] = contextvars.ContextVar("mmat_fresh_round", default=0)
_ROUND_STRIDE = 1_000_000  # keeps a redo's rollout ids apart from the agent's per-attempt ones


@contextlib.contextmanager
def fresh_replies(round_no: int):
    """Inside, LM calls skip cached replies: a new ``rollout_id`` per round when sampling (the redo's replies
    are cached under it), no cache at temperature 0. Round 0 changes nothing."""
    token = _fresh_round.set(round_no)
    try:
        yield
    finally:
        _fresh_round.reset(token)


def _lm_class():
    import dspy
    from dspy.utils.callback import with_callbacks

    from mmat.lm_gate import active_gate

    global _LMClass
    if _LMClass is None:
        # DSPy's call without its callback wrapper: through a gate the wrapper goes around all attempts (one
        # lm_calls row per call, as without a gate) and this runs once per attempt.
        send_once = dspy.BaseLM.__call__.__wrapped__
        asend_once = dspy.BaseLM.acall.__wrapped__

        class MmatLM(dspy.LM):
            """dspy.LM that honours ``fresh_replies`` and sends each request through the active LM gate
            (``mmat.lm_gate.use_gate``): every attempt takes a slot, the gate retries (honouring
            Retry-After), cached replies pass without one. Without a gate everything is DSPy's."""

            @property
            def num_retries(self) -> int:
                # DSPy's retry loop reads this; inside a gated attempt the gate retries, so DSPy must not.
                return 0 if _gated_attempt.get() else self.__dict__.get("_mmat_num_retries", 0)

            @num_retries.setter
            def num_retries(self, value: int) -> None:
                self.__dict__["_mmat_num_retries"] = value

            def _fresh(self, kwargs: dict[str, Any]) -> dict[str, Any]:
                round_no = _fresh_round.get()
                if round_no:
                    temperature = kwargs.get("temperature", self.kwargs.get("temperature"))
                    if temperature:
                        base = kwargs.get("rollout_id", self.kwargs.get("rollout_id")) or 0
                        kwargs["rollout_id"] = base + round_no * _ROUND_STRIDE
                    else:
                        kwargs["cache"] = False
                return kwargs

            def __call__(self, prompt=None, *, messages=None, **kwargs):
                kwargs = self._fresh(kwargs)
                gate = active_gate()
                if gate is None or _served_from_cache(self, prompt, messages, kwargs, asynchronous=False):
                    return super().__call__(prompt, messages=messages, **kwargs)
                first = gate.acquire(_candidates(self, kwargs))  # BudgetExhausted here: nothing sent, nothing recorded
                token = _first_slot.set(first)
                try:
                    return self._through_gate(prompt, messages=messages, **kwargs)
                finally:
                    _first_slot.reset(token)
                    first.refund()  # a no-op once the attempt ran

            @with_callbacks
            def _through_gate(self, prompt=None, *, messages=None, **kwargs):
                first = _first_slot.get()
                token = _gated_attempt.set(True)
                try:
                    return first.gate.attempts(lambda: send_once(self, prompt, messages=messages, **kwargs),
                                               retries=self.__dict__.get("_mmat_num_retries", 0), first=first,
                                               weight=first.weight)
                finally:
                    _gated_attempt.reset(token)

            async def acall(self, prompt=None, *, messages=None, **kwargs):
                import asyncio

                kwargs = self._fresh(kwargs)
                gate = active_gate()
                if gate is None or await asyncio.to_thread(_served_from_cache, self, prompt, messages, kwargs,
                                                           asynchronous=True):
                    return await super().acall(prompt, messages=messages, **kwargs)
                first = await gate.aacquire(_candidates(self, kwargs))
                token = _first_slot.set(first)
                try:
                    return await self._athrough_gate(prompt, messages=messages, **kwargs)
                finally:
                    _first_slot.reset(token)
                    first.refund()

            @with_callbacks
            async def _athrough_gate(self, prompt=None, *, messages=None, **kwargs):
                first = _first_slot.get()
                token = _gated_attempt.set(True)
                try:
                    return await first.gate.aattempts(lambda: asend_once(self, prompt, messages=messages, **kwargs),
                                                      retries=self.__dict__.get("_mmat_num_retries", 0), first=first,
                                                      weight=first.weight)
                finally:
                    _gated_attempt.reset(token)

        _LMClass = MmatLM
    return _LMClass


# Set while the gate runs a call's attempts (DSPy then makes one attempt each), and the slot the first takes.
_gated_attempt: contextvars.ContextVar[bool] = contextvars.ContextVar("mmat_gated_attempt", default=False)
_first_slot: contextvars.ContextVar[Any] = contextvars.ContextVar("mmat_first_slot", default=None)


def _candidates(lm: Any, kwargs: dict[str, Any]) -> int:
    """How many requests one call may send: DSPy's native engine sends one per candidate (``n``), one after
    another, so the gate charges ``n`` to the call budget (a provider taking ``n`` in one request is overcharged,
    never undercharged)."""
    n = kwargs.get("n", lm.kwargs.get("n"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _served_from_cache(lm: Any, prompt: Any, messages: Any, kwargs: dict[str, Any], *, asynchronous: bool) -> bool:
    """Would DSPy answer this call from its response cache (then nothing is sent and no slot is taken)?
    Asked through DSPy's own request preparation and cache lookup, so the key is exactly the one the call uses."""
    from dspy.clients.execution import _cached, prepare

    try:
        call = prepare(lm, prompt, messages, dict(kwargs), asynchronous=asynchronous)
    except Exception:  # the call itself raises the same error; it sends nothing either way
        return False
    return _cached(lm, call, asynchronous) is not None


_LMClass = None


def build_lm(model: str, *, settings: Settings | None = None, **opts: Any):
    """A ``dspy.LM`` for any litellm model string, configured from ``settings`` (``opts`` override).

    Passes temperature, max_tokens, num_retries and (for OpenAI-compatible providers) api_base. A
    registered provider's ``prepare`` gives the canonical model string and its extra arguments (local
    models carry MMAT_HOME so the provider finds the converted weights under it); in-process models never
    retry (a failure there is not transient).
    """
    import dspy

    settings = settings or load_settings()
    configure_litellm(settings)
    provider = _preflight(model, settings, opts)
    kwargs: dict[str, Any] = {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "num_retries": settings.num_retries,
    }
    registered = _registered(provider)
    if registered is not None:
        model, extra = registered.prepared(model, settings)
        kwargs.update(extra)
    if registered is not None and registered.capabilities_of(model, settings).in_process:
        kwargs["num_retries"] = 0
    else:
        kwargs["timeout"] = settings.request_timeout_s
        api_base = _api_base_for(provider, settings, opts)
        if provider in _API_BASE_PROVIDERS and settings.api_base:
            kwargs["api_base"] = settings.api_base
        if "api_key" not in opts and _private(api_base):
            from mmat.preflight import key_for

            kwargs["api_key"] = key_for(provider, api_base)  # the user's key if set, else a placeholder
    kwargs.update(opts)
    return _lm_class()(model, **kwargs)


teacher = build_lm


def _host_port(api_base: str) -> tuple[str, int]:
    parsed = urlparse(api_base if "://" in api_base else f"http://{api_base}")
    if not parsed.hostname:
        raise ModelUnavailableError(f"api_base {api_base!r} is not a URL: set MMAT_API_BASE to e.g. http://localhost:8000/v1")
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def check_model(model: str, settings: Settings | None = None, *, timeout_s: float = _CONNECT_TIMEOUT_S,
                role: str | None = None, command: str | None = None) -> None:
    """Fast preflight before a long run: everything ``build_lm`` checks, then (with an api_base) the server:
    ``GET <api_base>/models`` for OpenAI-compatible servers (reachable, right path, model id served; see
    ``mmat.preflight``), a TCP connect for others. Raises ModelUnavailableError with the fix."""
    settings = settings or load_settings()
    configure_litellm(settings)
    provider = _preflight(model, settings, {})
    if capabilities(model, settings).in_process:
        return
    api_base = _api_base_for(provider, settings, {})
    if not api_base:
        _resolve_structured(model, settings, role, command)
        return
    from mmat.preflight import LISTING_PROVIDERS, check_server, roles_for

    role = role or (roles_for(model, settings) or [None])[0] if command != "models" else role
    if provider in LISTING_PROVIDERS:
        check_server(model, provider, api_base, settings, role=role, command=command)
        _resolve_structured(model, settings, role, command)
        return
    host, port = _host_port(api_base)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ModelUnavailableError(
            f"cannot reach {api_base} for {model!r} ({reason}): start the server or fix --api-base (MMAT_API_BASE)"
        ) from None


def adapter_for(model: str, settings: Settings | None = None, role: str | None = None):
    """The DSPy adapter programs should use with ``model``: JSONAdapter for models whose decoding is
    constrained to the JSON schema it sends (local models), ChatAdapter for other native-structured ones
    (scripted test models), and for server/API models the ``structured_output`` mode resolved for them
    (``mmat.structured``): a StructuredAdapter sending the signature's schema (or JSON mode), or DSPy's
    ChatAdapter when off. A mode resolved by the run's preflight (``check_model``) is reused, so runners
    need not pass their settings here."""
    import dspy

    caps = capabilities(model, settings)
    if caps.native_structured:
        return dspy.JSONAdapter(use_native_function_calling=False) if caps.constrained_decoding else dspy.ChatAdapter()
    from mmat.structured import StructuredAdapter, resolved

    found = resolved(model) if settings is None else None
    if found is None:
        found = _resolve_structured(model, settings or load_settings(), role)
    mode, provider, api_base = found
    if mode in ("json_schema", "json_object"):
        return StructuredAdapter(mode, provider, api_base)
    return dspy.ChatAdapter()


def _resolve_structured(model: str, settings: Settings, role: str | None, command: str | None = None) -> tuple[str, str, str | None]:
    """(mode, provider, api_base) for a server/API model; a probe that fails for a passing reason means off
    for now (not cached), one the user must fix raises ModelUnavailableError."""
    from dspy.utils.exceptions import LMError

    from mmat.preflight import describe_failure
    from mmat.structured import remember, resolve_mode

    provider = provider_of(model)
    api_base = _api_base_for(provider, settings, {})
    try:
        mode = resolve_mode(model, settings, role)
    except LMError as e:
        failure = describe_failure(e, settings, command)
        if failure is not None and failure.fatal:
            raise ModelUnavailableError(failure.message) from None
        log.warning("structured-output probe of %s failed (%s): no response_format for now", model,
                    failure.message if failure else e)
        return ("off", provider, api_base)
    remember(model, mode, provider, api_base)
    return (mode, provider, api_base)


def structured_mode(model: str, settings: Settings | None = None, role: str | None = None) -> str:
    """The structured-output mode ``model`` runs with: native (its provider declares it), json_schema,
    json_object or off."""
    if capabilities(model, settings).native_structured:
        return "native"
    return _resolve_structured(model, settings or load_settings(), role)[0]


def model_error(exc: BaseException) -> MmatError | None:
    """The mmat error behind an exception DSPy/litellm wrapped (providers raise through two layers)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MmatError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class ModelStatus(BaseModel):
    """One row of ``mmat models``."""

    name: str
    kind: Literal["embedded", "adapter", "model_dir", "api", "server"]
    available: bool
    reason: str


def _embedded_statuses(settings: Settings) -> list[ModelStatus]:
    from mmat.local.registry import LOCAL_MODELS, is_converted, resolve_local

    rows = []
    for name in LOCAL_MODELS:
        try:
            spec = resolve_local(name, settings)
        except ModelUnavailableError as e:
            rows.append(ModelStatus(name=f"{LOCAL}/{name}", kind="embedded", available=False, reason=str(e)))
            continue
        if is_converted(spec.model_dir):
            reason = f"converted copy cached at {spec.model_dir}"
        else:
            reason = f"GGUF present; first use converts it to {spec.model_dir} (about a minute, once)"
        rows.append(ModelStatus(name=f"{LOCAL}/{name}", kind="embedded", available=True, reason=reason))
    return rows


def _adapter_statuses(settings: Settings) -> list[ModelStatus]:
    from mmat.local.registry import resolve_local

    root = settings.adapters_dir
    if not root.is_dir():
        return []
    rows = []
    for config in sorted(root.glob("**/adapter_config.json")):
        if any(part.startswith("checkpoint-") for part in config.parent.relative_to(root).parts):
            continue  # intermediate training checkpoints are not models to offer
        name = f"{LOCAL}/{config.parent}"
        try:
            spec = resolve_local(str(config.parent), settings)
        except ModelUnavailableError as e:
            rows.append(ModelStatus(name=name, kind="adapter", available=False, reason=str(e)))
            continue
        base = f"local/{spec.base.name}" if spec.base is not None and spec.base.kind == "embedded" else spec.base_ref
        rows.append(ModelStatus(name=name, kind="adapter", available=True, reason=f"LoRA adapter on {base}"))
    return rows


def _api_statuses(settings: Settings) -> list[ModelStatus]:
    rows = []
    for provider, example in API_PROVIDERS.items():
        missing = _missing_keys(example, provider, None)
        if missing:
            rows.append(ModelStatus(name=f"{provider}/*", kind="api", available=False, reason=f"set {' and '.join(missing)}"))
        else:
            rows.append(ModelStatus(name=f"{provider}/*", kind="api", available=True, reason="API key set"))
    for provider in SERVER_PROVIDERS:
        base = _api_base_for(provider, settings, {})
        reason = (f"api_base {base} (not contacted: mmat models --check {provider}/MODEL)" if base
                  else "set --api-base (MMAT_API_BASE) to the server, e.g. " + SERVER_PROVIDERS[provider])
        rows.append(ModelStatus(name=f"{provider}/*", kind="server", available=bool(base), reason=reason))
    return rows


def model_statuses(settings: Settings | None = None) -> list[ModelStatus]:
    """What ``mmat models`` lists: embedded models, adapters under ``settings.adapters_dir``, API providers
    (is the key set?) and local servers (is an api_base configured?). Reads files and the environment only."""
    settings = settings or load_settings()
    _quiet_litellm()
    return (_embedded_statuses(settings) + _missing_package_statuses() + _adapter_statuses(settings)
            + _api_statuses(settings))


def _missing_package_statuses() -> list[ModelStatus]:
    """A row per embedded-model package (MiniLM, xgrammar, rapidocr, ...) that is not installed at its pin."""
    from mmat.embedded import INSTALL_HINT, missing_embedded

    return [ModelStatus(name=p.name, kind="embedded package", available=False,
                        reason=f"{'not installed' if p.installed is None else 'version ' + p.installed}, needs "
                               f"{p.pinned}: run `{INSTALL_HINT}`") for p in missing_embedded()]
