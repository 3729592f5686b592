"""How the Responses engine reaches a model: one small interface, a streamed chat
completion, so any chat-completions upstream serves both APIs.

``ChatModel.stream`` opens the call and raises an ``APIError`` for anything that fails
before the first chunk (unknown model, upstream down), so the HTTP handler can still
answer with a proper error; after that it yields parsed chunks. The engine always streams
from the upstream, whether or not its own client asked for a stream: one code path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import orjson

from functions.common import errors
from functions.common.principal import Principal
from functions.common.runtime import Runtime


class ChatModel(Protocol):
    async def stream(
        self, principal: Principal, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...


class DirectUpstream:
    """Calls the built-in upstream (``JAN_INFERENCE_MODEL_URL``) straight, without the
    router: the fallback while no router is registered for this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def stream(
        self, principal: Principal, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        base = self.runtime.settings.jan_inference_model_url
        if not base:
            raise errors.ServiceUnavailable("No inference upstream is configured.")
        request = self.runtime.http.build_request(
            "POST",
            base.rstrip("/") + "/chat/completions",
            content=orjson.dumps({**body, "stream": True}),
            headers={"content-type": "application/json"},
        )
        try:
            response = await self.runtime.http.send(request, stream=True)
        except httpx.TimeoutException:
            raise errors.UpstreamTimeout("The model server did not answer in time.") from None
        except httpx.HTTPError:
            raise errors.UpstreamError("The model server could not be reached.") from None
        if response.status_code >= 400:
            raw = await response.aread()
            await response.aclose()
            raise upstream_error(response.status_code, raw)
        return _chunks(response)


def upstream_error(status: int, raw: bytes) -> errors.APIError:
    """The caller's faults pass through with the upstream's message; the rest are 502s."""
    message = "The model server failed to answer."
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
        message = str(orjson.loads(raw)["error"]["message"])
    if status in (400, 404, 413, 422):
        return errors.for_status(404 if status == 404 else 400, message)
    return errors.UpstreamError(message)


async def _chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise errors.UpstreamError("The model server sent a malformed stream.") from None
            if isinstance(chunk, dict) and "error" in chunk:
                raise errors.UpstreamError(str(chunk["error"].get("message", "stream error")))
            yield chunk
    except httpx.HTTPError:
        raise errors.UpstreamError("The model server broke off the stream.") from None
    finally:
        await response.aclose()


def model_of(runtime: Runtime) -> ChatModel:
    """The process's ChatModel: the one registered as a service (the inference router),
    else the direct fallback."""
    found = runtime.services.get(ChatModel)
    if found is None:
        found = DirectUpstream(runtime)
        runtime.services[ChatModel] = found
    model: ChatModel = found
    return model
