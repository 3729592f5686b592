"""What a response's prompt costs in tokens, and fitting it to the model's context window.

Both count the chat request the engine sends (``convert``), so a count is the one the run
would use: the model server's own tokenizer where it has one (vLLM's ``/tokenize``), else
an estimate, marked as such, of one token per four bytes of the request's messages and
tools.

``truncation: "auto"`` drops items from the beginning of the history until the prompt,
with room for ``max_output_tokens``, fits the context window the model server reports
(vLLM's ``max_model_len``); where it reports none, nothing is dropped and an input too
long fails upstream as it would with ``"disabled"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from functions.common.principal import Principal
from functions.responses.convert import chat_body, chat_messages
from functions.responses.model import ChatModel
from functions.responses.params import ResponseRequest
from functions.services.toolbox.server import ServerTool

# Bytes of request JSON per token, for an estimate (as the rate limiter reserves).
BYTES_PER_TOKEN = 4
# A context window that fits the prompt exactly leaves the model no room to answer.
MIN_ANSWER_TOKENS = 1


@dataclass(frozen=True, slots=True)
class PromptCount:
    tokens: int
    estimated: bool  # no tokenizer answered: one token per four bytes
    context_window: int | None = None


def request_body(
    request: ResponseRequest, items: list[dict[str, Any]], server_tools: dict[str, ServerTool]
) -> dict[str, Any]:
    """The chat request the engine sends for ``items``."""
    return chat_body(request, chat_messages(request.instructions, items), server_tools)


async def count_prompt(
    model: ChatModel, principal: Principal | None, body: dict[str, Any]
) -> PromptCount:
    """The prompt tokens of chat request ``body``. Without a ``principal`` (no model
    named), an estimate."""
    asked: dict[str, Any] = {k: body[k] for k in ("model", "messages", "tools") if k in body}
    if principal is not None:
        counted = await model.count_tokens(principal, asked)
        if counted is not None:
            return PromptCount(counted.tokens, False, counted.context_window)
    size = len(orjson.dumps({k: v for k, v in asked.items() if k != "model"}))
    return PromptCount(-(-size // BYTES_PER_TOKEN), True)


async def fit_items(
    model: ChatModel,
    principal: Principal,
    request: ResponseRequest,
    items: list[dict[str, Any]],
    server_tools: dict[str, ServerTool],
) -> list[dict[str, Any]]:
    """``items`` as the model sees them: under ``truncation: "auto"``, without as many of
    the oldest as it takes to fit the context window (the last item always stays)."""
    if request.truncation != "auto":
        return items
    room = None
    while len(items) > 1:
        count = await count_prompt(model, principal, request_body(request, items, server_tools))
        window = count.context_window
        if count.estimated or window is None:
            return items  # the window is not known: nothing to fit to
        room = window - (request.max_output_tokens or MIN_ANSWER_TOKENS)
        if count.tokens <= room:
            return items
        # Drop the oldest share that holds the excess (by size), at least one item.
        sizes = [len(orjson.dumps(item)) for item in items]
        excess = sum(sizes) * (count.tokens - room) / count.tokens
        drop, dropped = 0, 0
        while drop < len(items) - 1 and (drop == 0 or dropped < excess):
            dropped += sizes[drop]
            drop += 1
        items = _from_turn_start(items[drop:])
    return items


def _from_turn_start(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` less any leading tool outputs whose calls were dropped (a chat request
    may not start with a tool result), keeping the last item whatever it is."""
    start = 0
    while start < len(items) - 1 and items[start].get("type") == "function_call_output":
        start += 1
    return items[start:]
