"""Calling models from other areas (the Responses API's tool loop), in-process.

    from functions.services.inference import api

    models = await api.list_models(inference, principal)          # [{"id", "object", …}]
    completion = await api.chat_completion(inference, principal, body, affinity=conv_id)
    async for chunk in api.stream_chat_completion(inference, principal, body, affinity=conv_id):
        ...  # each a parsed chat.completion.chunk dict; the last carries "usage"

``body`` is a Chat Completions request (a dict, as a client would send it); ``model`` must
be one the principal may use. Errors are the same ``APIError``s the HTTP endpoint answers
(404 unknown model, 400 refused by the model server, 502/503/504 upstream trouble),
raised before the first chunk when the call fails early and from the iterator when a
stream breaks later. ``affinity`` keeps a conversation on one endpoint (prompt cache).
Usage is recorded in the ledger like any other request (operation ``chat.completions``).
The stream always asks the upstream for usage and yields that final usage chunk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from functions.common import errors
from functions.common.principal import Principal
from functions.services.inference import failures
from functions.services.inference.requests import validate
from functions.services.inference.router import OpenStream, Reply, StreamBroken
from functions.services.inference.service import Inference, ModelStream
from functions.services.inference.sse import DONE, StreamTally, payloads
from functions.services.inference.streaming import StreamOutcome

OPERATION = "chat.completions"


async def list_models(svc: Inference, principal: Principal) -> list[dict[str, Any]]:
    return [route.card(name) for name, route in await svc.models_for(principal)]


async def chat_completion(
    svc: Inference, principal: Principal, body: dict[str, Any], *, affinity: str | None = None
) -> dict[str, Any]:
    """A non-streamed chat completion, as the parsed ``chat.completion`` object."""
    body = {**body, "stream": False}
    validate(OPERATION, body)
    reply = await svc.call(
        principal, OPERATION, body, orjson.dumps(body), stream=False, affinity=affinity
    )
    assert isinstance(reply, Reply)
    result: dict[str, Any] = orjson.loads(reply.body)
    return result


def stream_chat_completion(
    svc: Inference, principal: Principal, body: dict[str, Any], *, affinity: str | None = None
) -> ChatStream:
    """A streamed chat completion, chunk by chunk (parsed), ending with the usage chunk."""
    return ChatStream(svc, principal, body, affinity)


class ChatStream:
    """The chunks of a streamed chat completion (iterate; ``aclose`` to stop early).
    ``model``: the model that serves it, once the first chunk is in (a fallback's when
    the model asked for failed)."""

    def __init__(
        self, svc: Inference, principal: Principal, body: dict[str, Any], affinity: str | None
    ) -> None:
        self.model: str | None = None
        self._chunks = self._run(svc, principal, body, affinity)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def _run(
        self, svc: Inference, principal: Principal, body: dict[str, Any], affinity: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        options = body.get("stream_options") or {}
        body = {**body, "stream": True, "stream_options": {**options, "include_usage": True}}
        validate(OPERATION, body)
        call = await svc.call(
            principal, OPERATION, body, orjson.dumps(body), stream=True, affinity=affinity
        )
        assert isinstance(call, ModelStream)
        self.model = call.entry.route.model
        opened = call.stream
        tally = StreamTally(keep_usage_chunk=True)
        with StreamOutcome(opened, tally, call.entry.write, svc.runtime.shutdown) as outcome:
            try:
                async for payload in _payloads(opened):
                    if payload == DONE:
                        tally.done = True
                        outcome.ended()
                        return
                    chunk = orjson.loads(payload)
                    if not isinstance(chunk, dict):
                        continue
                    if isinstance(chunk.get("error"), dict):
                        outcome.broke(failures.error_event())
                        message = chunk["error"].get("message") or "The model server failed."
                        raise errors.UpstreamError(str(message))
                    if isinstance(chunk.get("usage"), dict):
                        tally.usage = chunk["usage"]
                    yield chunk
                outcome.ended()  # no [DONE]: a cut
                raise errors.UpstreamError("The model server ended the stream early.")
            except StreamBroken as broken:
                raise outcome.broke(broken.failure).error from None


async def _payloads(opened: OpenStream) -> AsyncIterator[bytes]:
    for payload in payloads(opened.first):
        yield payload
    async for block in opened:
        for payload in payloads(block):
            yield payload
