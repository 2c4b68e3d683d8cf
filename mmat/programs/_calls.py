"""Small helpers every program uses: one way to call a predictor, to clean typed outputs, and to decide
whether the model in use sees images.

A model that answers in the wrong shape is the model's failure (ModelOutputError, recorded and
counted); an mmat error raised inside DSPy or litellm (a missing key, an exhausted test script) is
ours or the user's and is re-raised as itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from mmat.errors import ModelOutputError

__all__ = ["call_predictor", "clean_optional", "strip_code_fences", "active_lm", "lm_is_multimodal", "mark",
           "stage_signature"]

log = logging.getLogger(__name__)

_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.S)
_NULLS = {"", "none", "null", "n/a", "-"}


def mark(module: Any, name: str) -> Any:
    """Give a module or predictor the stable ``_mmat_name`` the LM-call recorder files its calls under."""
    module._mmat_name = name
    return module


def stage_signature(signature: Any, default: type[dspy.Signature]) -> type[dspy.Signature]:
    """The signature a stage runs: ``default``, or a subclass of it (new instructions, same typed fields).

    A subclass keeps every input and output field the stage reads and writes, so its docstring (the
    prompt) and field descriptions can change while the module's code stays valid.
    """
    if signature is None:
        return default
    if not (isinstance(signature, type) and issubclass(signature, default)):
        raise TypeError(f"signature must be a subclass of {default.__name__} (same fields, your instructions), "
                        f"got {signature!r}")
    return signature


def call_predictor(predictor: Any, stage: str, **kwargs: Any) -> dspy.Prediction:
    """Run ``predictor(**kwargs)``; an unparsable answer becomes ModelOutputError naming the stage."""
    try:
        return predictor(**kwargs)
    except AdapterParseError as e:
        snippet = " ".join(str(getattr(e, "lm_response", "") or "").split())[:200]
        from mmat.store.recorder import note_unparsable

        note_unparsable(f"{stage}: {'empty or null response' if not snippet else 'did not fit the requested fields'}")
        if not snippet:
            raise ModelOutputError(f"{stage}: the model returned an empty or null response (no choices or no text)") from e
        raise ModelOutputError(
            f"{stage}: the model's answer did not fit the requested fields ({snippet!r}); a stronger teacher or a "
            "JSON-schema-constrained model avoids this"
        ) from e
    except Exception as e:
        from mmat.lm import model_error

        inner = model_error(e)
        if inner is not None and inner is not e:
            raise inner from e
        raise


def clean_optional(value: Any) -> str | None:
    """``None``/"null"/"None"/"" (how models write 'nothing') -> None; other text stripped."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _NULLS else text


def strip_code_fences(code: str) -> str:
    """The code inside one markdown fence (```python ... ```), or the text unchanged."""
    match = _FENCE.match(code or "")
    return match.group(1) if match else (code or "")


def active_lm(module: Any = None) -> Any:
    """The LM a predictor will use: its own, else the one configured in dspy.settings."""
    lm = getattr(module, "lm", None) if module is not None else None
    return lm or dspy.settings.lm


def lm_is_multimodal(lm: Any) -> bool:
    """Whether ``lm``'s model takes images (``mmat.lm.capabilities``: its provider's declaration, else
    ``litellm.supports_vision``).

    Unknown models count as text-only; register others with
    ``litellm.register_model({"provider/name": {"supports_vision": True, ...}})`` or pass ``multimodal=True``.
    """
    model = getattr(lm, "model", None)
    if not isinstance(model, str) or not model:
        return False
    from mmat.errors import ModelUnavailableError
    from mmat.lm import capabilities

    try:
        return bool(capabilities(model).images)
    except ModelUnavailableError as e:  # a model string no provider knows: it shows nothing
        log.debug("capabilities(%s) failed (%s); treating it as text-only", model, e)
        return False
