"""Running a response: model turns, the server-side tool loop, and OpenAI's stream events.

``run_events`` is one async generator for every mode. A streamed request sends its events
as SSE; a plain request drains it and answers with the final object; a background worker
drains it too. The upstream is opened before the first event, so a request the model
server rejects outright (unknown model) still gets a plain HTTP error. ``persist`` is
awaited with the final object before the terminal event goes out, so a client that reads
``response.completed`` can fetch the stored response at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from functions.common.errors import APIError, UpstreamError
from functions.common.ids import new_id
from functions.conversations.items import new_item_id
from functions.conversations.owner import Owner
from functions.responses.convert import chat_body, chat_messages
from functions.responses.model import ChatModel
from functions.responses.objects import response_object, usage_object
from functions.responses.params import ResponseRequest
from functions.responses.tools import ServerTool

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 8
TOOL_TIMEOUT_SECONDS = 60.0
Event = dict[str, Any]
Persist = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Run:
    response_id: str
    owner: Owner
    request: ResponseRequest
    history: list[dict[str, Any]]  # the items before this response's input
    server_tools: dict[str, ServerTool]
    created_at: float = field(default_factory=time.time)
    # Filled in as the run goes.
    status: str = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: float | None = None
    failure: APIError | None = None

    def snapshot(self) -> dict[str, Any]:
        request = self.request
        done = self.status not in ("queued", "in_progress")
        return response_object(
            {
                "id": self.response_id,
                "created_at": self.created_at,
                "status": self.status,
                "background": request.background,
                "completed_at": self.completed_at,
                "error": self.error,
                "incomplete_details": self.incomplete_details,
                "params": request.echo(),
                "output": [dict(item) for item in self.output],
                "previous_response_id": request.previous_response_id,
                "conversation_id": request.conversation_id,
                "usage": usage_object(self.input_tokens, self.output_tokens) if done else None,
                "metadata": request.metadata,
            }
        )


async def run_events(run: Run, model: ChatModel, persist: Persist) -> AsyncIterator[Event]:
    """The response's events, numbered; raises APIError only before the first one."""
    number = 0

    def numbered(event: Event) -> Event:
        nonlocal number
        event["sequence_number"] = number
        number += 1
        return event

    items = [*run.history, *run.request.input_items]
    chunks = await _open(run, model, items)
    yield numbered({"type": "response.created", "response": run.snapshot()})
    yield numbered({"type": "response.in_progress", "response": run.snapshot()})
    try:
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            turn = Turn(run.output)
            async for chunk in chunks:
                for event in turn.feed(chunk):
                    yield numbered(event)
            if turn.finish_reason is None:
                # A stream cut before its end: don't pass half an answer off as complete.
                raise UpstreamError("The model server ended the stream early.")
            for event in turn.close():
                yield numbered(event)
            run.input_tokens += turn.input_tokens
            run.output_tokens += turn.output_tokens
            if turn.finish_reason == "length":
                run.status, run.incomplete_details = "incomplete", {"reason": "max_output_tokens"}
                break
            ours = [c for c in turn.calls if c["name"] in run.server_tools]
            if not ours:
                break  # an answer, or calls only the client can run
            if round_number == MAX_TOOL_ROUNDS:
                run.status, run.incomplete_details = "incomplete", {"reason": "max_tool_calls"}
                break
            for call in ours:
                for event in await _run_tool(run, call):
                    yield numbered(event)
            if len(ours) != len(turn.calls):
                break  # the client answers its own calls, then the model continues
            await _close(chunks)
            chunks = await _open(run, model, [*items, *run.output])
        if run.status == "in_progress":
            run.status = "completed"
    except APIError as exc:
        run.status, run.failure = "failed", exc
        run.error = {"code": exc.code or exc.type, "message": exc.message}
    except Exception:
        log.exception("response run failed", extra={"response_id": run.response_id})
        run.status = "failed"
        run.error = {"code": "server_error", "message": "The server had an error."}
    finally:
        # Also on cancellation (client gone, background cancel): stop the upstream call.
        await _close(chunks)
    for item in run.output:
        if item.get("status") == "in_progress":
            item["status"] = "incomplete"  # cut off by the failure
    run.completed_at = time.time()
    final = run.snapshot()
    await persist(final)
    if run.status == "failed":
        assert run.error is not None
        yield numbered({"type": "error", **run.error, "param": None})
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete"}
    yield numbered({"type": terminal.get(run.status, "response.failed"), "response": final})


async def _open(run: Run, model: ChatModel, items: list[dict[str, Any]]) -> AsyncIterator[Any]:
    messages = chat_messages(run.request.instructions, items)
    body = chat_body(run.request, messages, run.server_tools)
    # A conversation stays on one endpoint, so the engine's prompt cache can serve it.
    return await model.stream(run.owner.principal, body, affinity=run.request.conversation_id)


async def _close(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _run_tool(run: Run, call: dict[str, Any]) -> list[Event]:
    """Run one server-side tool call; its output becomes an item the model reads next."""
    tool = run.server_tools[call["name"]]
    try:
        async with asyncio.timeout(TOOL_TIMEOUT_SECONDS):
            output = await tool.run(call["arguments"])
    except TimeoutError:
        output = f"Error: the tool '{tool.name}' did not finish in time."
    except Exception:
        # A tool's own failure is something the model can read and work around.
        log.exception("server-side tool failed", extra={"tool": tool.name})
        output = f"Error: the tool '{tool.name}' failed."
    item = {
        "type": "function_call_output",
        "id": new_item_id("function_call_output"),
        "call_id": call["call_id"],
        "output": output,
        "status": "completed",
    }
    index = len(run.output)
    run.output.append(item)
    return [
        {"type": "response.output_item.added", "output_index": index, "item": dict(item)},
        {"type": "response.output_item.done", "output_index": index, "item": dict(item)},
    ]


class Turn:
    """One streamed chat completion turned into output items and their events."""

    def __init__(self, output: list[dict[str, Any]]) -> None:
        self.output = output
        self.text_item: dict[str, Any] | None = None
        self.text = ""
        self.open_calls: dict[int, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def close(self) -> list[Event]:
        events = self._close_text()
        for index in sorted(self.open_calls):
            events += self._close_call(index)
        return events

    def _add(self, item: dict[str, Any]) -> Event:
        self.output.append(item)
        index = len(self.output) - 1
        return {"type": "response.output_item.added", "output_index": index, "item": dict(item)}

    def _text_delta(self, delta: str) -> list[Event]:
        events: list[Event] = []
        if self.text_item is None:
            self.text_item = {
                "id": new_item_id("message"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            events.append(self._add(self.text_item))
            events.append(
                {
                    **self._where(self.text_item),
                    "type": "response.content_part.added",
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
        self.text += delta
        events.append(
            {
                **self._where(self.text_item),
                "type": "response.output_text.delta",
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }
        )
        return events

    def _close_text(self) -> list[Event]:
        item = self.text_item
        if item is None:
            return []
        self.text_item = None
        part = {"type": "output_text", "text": self.text, "annotations": []}
        item.update(content=[part], status="completed")
        where = self._where(item)
        return [
            {
                **where,
                "type": "response.output_text.done",
                "content_index": 0,
                "text": self.text,
                "logprobs": [],
            },
            {**where, "type": "response.content_part.done", "content_index": 0, "part": part},
            {
                "type": "response.output_item.done",
                "output_index": where["output_index"],
                "item": dict(item),
            },
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        events: list[Event] = []
        item = self.open_calls.get(index)
        if item is None:
            events += self._close_text()  # the text before a call is complete
            item = {
                "id": new_item_id("function_call"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or new_id("call_"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            self.open_calls[index] = item
            events.append(self._add(item))
        elif function.get("name") and function["name"] != item["name"]:
            # Names arrive whole in the first delta (OpenAI, vLLM); llama.cpp repeats them
            # in every delta, so only a different piece extends the name.
            item["name"] += function["name"]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(
                {
                    **self._where(item),
                    "type": "response.function_call_arguments.delta",
                    "delta": function["arguments"],
                }
            )
        return events

    def _close_call(self, index: int) -> list[Event]:
        item = self.open_calls.pop(index)
        item["status"] = "completed"
        self.calls.append(item)
        where = self._where(item)
        return [
            {
                **where,
                "type": "response.function_call_arguments.done",
                "name": item["name"],
                "arguments": item["arguments"],
            },
            {
                "type": "response.output_item.done",
                "output_index": where["output_index"],
                "item": dict(item),
            },
        ]

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        index = next(i for i, it in enumerate(self.output) if it is item)
        return {"item_id": item["id"], "output_index": index}
