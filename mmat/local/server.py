"""An OpenAI-compatible HTTP endpoint over the local provider: ``mmat serve ADAPTER --engine local --run``.

Where vLLM cannot run (no CUDA GPU, no vllm package), a tuned student is still a *server*: other
processes, other machines' tools and ``mmat eval --controller hosted_vllm/NAME --api-base ...`` reach
it the same way they would reach vLLM. Two routes, the ones those clients use:

- ``GET /v1/models`` lists the one served model id;
- ``POST /v1/chat/completions`` (non-streaming) runs the local provider: the same chat rendering,
  JSON-schema-constrained decoding (``response_format``) and stop handling as ``local/<adapter>``
  in-process, so the prompt the student sees is the one it was trained on.

Errors use OpenAI's shape (``{"error": {"message", "type", "code"}}``) with 400/404 statuses, so a
client's message names the fix. One CPU model generates one sequence at a time: requests queue on
a lock instead of thrashing two cores. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mmat.local.provider import HOME_PARAM, LocalProvider

__all__ = ["build_app", "SERVED_PARAMS"]

# Request fields passed to the provider (others, e.g. "stream_options" or "user", are ignored).
SERVED_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n", "response_format")


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error"):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def build_app(model: str, served_name: str, *, home: str | None = None):
    """A Starlette app serving ``local/<model>`` under the id ``served_name``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    provider = LocalProvider()
    one_at_a_time = threading.Lock()
    created = int(time.time())

    def complete(messages: list, params: dict[str, Any]) -> dict[str, Any]:
        with one_at_a_time:
            response = provider.completion(model=f"local/{model}", messages=messages,
                                           optional_params={**params, HOME_PARAM: home})
        body = response.model_dump()
        body["model"] = served_name
        body["object"] = "chat.completion"
        return body

    async def models(_: Request):
        return JSONResponse({"object": "list", "data": [
            {"id": served_name, "object": "model", "created": created, "owned_by": "mmat"}]})

    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object", "invalid_json")
        if body.get("model") != served_name:
            return _error(404, f"model {body.get('model')!r} is not served here; this server serves {served_name!r}",
                          "model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a non-empty list of message objects", "invalid_messages")
        if body.get("stream"):
            return _error(400, "streaming is not supported by mmat's local engine; send stream=false", "unsupported")
        params = {k: body[k] for k in SERVED_PARAMS if body.get(k) is not None}
        try:
            return JSONResponse(await run_in_threadpool(complete, messages, params))
        except (ValueError, TypeError, KeyError) as e:  # unreadable content parts, bad parameter values
            return _error(400, f"cannot serve this request: {e}", "invalid_request")

    return Starlette(routes=[Route("/v1/models", models, methods=["GET"]),
                             Route("/v1/chat/completions", chat, methods=["POST"])])
