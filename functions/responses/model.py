"""How the Responses engine reaches a model: one small interface, a streamed chat
completion, so every chat-completions upstream the router knows serves both APIs.

``ChatModel.stream`` opens the call (saying which model serves it) and raises an
``APIError`` for anything that fails before the first chunk (unknown model, upstream
down), so the HTTP handler can still answer with a proper error; after that it yields
parsed chunks. The engine always streams
from the upstream, whether or not its own client asked for a stream: one code path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from functions.common import errors
from functions.common.principal import Principal
from functions.services.inference import api
from functions.services.inference.service import Inference, TokenCount


@dataclass(frozen=True, slots=True)
class Opened:
    """A model call whose first chunk is in: its chunks, and the model that serves it (a
    fallback's when the model asked for failed)."""

    chunks: AsyncIterator[dict[str, Any]]
    model: str


class ChatModel(Protocol):
    async def model_named(self, principal: Principal, name: str) -> str: ...

    async def stream(
        self, principal: Principal, body: dict[str, Any], *, affinity: str | None
    ) -> Opened: ...

    async def count_tokens(
        self, principal: Principal, body: dict[str, Any]
    ) -> TokenCount | None: ...


class RouterModel:
    """The inference router (the `chat` area's in-process API): endpoint choice, failover
    and the usage ledger, exactly as for `/v1/chat/completions`."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def model_named(self, principal: Principal, name: str) -> str:
        """The model a name stands for (a model alias resolved)."""
        return await self.inference.model_named(principal, name)

    async def stream(
        self, principal: Principal, body: dict[str, Any], *, affinity: str | None
    ) -> Opened:
        chunks = api.stream_chat_completion(self.inference, principal, body, affinity=affinity)
        try:
            first = await anext(chunks)  # early failures surface here, as plain errors
        except StopAsyncIteration:
            raise errors.UpstreamError("The model server sent an empty stream.") from None
        assert chunks.model is not None  # known once a chunk is in
        return Opened(_prepend(first, chunks), chunks.model)

    async def count_tokens(self, principal: Principal, body: dict[str, Any]) -> TokenCount | None:
        """The model's own count of a chat request's prompt (None: it has no tokenizer)."""
        return await self.inference.tokenize(principal, body)


async def _prepend(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        # Closing us closes the upstream call (and records its usage) at once.
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
