"""One streamed chat completion turned into response output items and their events."""

from __future__ import annotations

from typing import Any

from functions.common.ids import new_id
from functions.responses import calls
from functions.responses.calls import Call, Event, where
from functions.services.conversations.items import new_item_id
from functions.services.toolbox.server import ServerTool


class Turn:
    def __init__(self, output: list[dict[str, Any]], server_tools: dict[str, ServerTool]) -> None:
        self.output = output
        self.server_tools = server_tools
        self.text_item: dict[str, Any] | None = None
        self.text = ""
        self.logprobs: list[dict[str, Any]] = []
        self.open_calls: dict[int, Call] = {}
        self.calls: list[Call] = []
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
                events += self._text_delta(delta["content"], _logprobs(choice))
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def close(self) -> list[Event]:
        events = self._close_text()
        for index in sorted(self.open_calls):
            call = self.open_calls.pop(index)
            self.calls.append(call)
            events += calls.close_call(self.output, call)
        return events

    def _add(self, item: dict[str, Any]) -> Event:
        self.output.append(item)
        index = len(self.output) - 1
        return {"type": "response.output_item.added", "output_index": index, "item": dict(item)}

    def _text_delta(self, delta: str, logprobs: list[dict[str, Any]]) -> list[Event]:
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
                    **where(self.output, self.text_item),
                    "type": "response.content_part.added",
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                }
            )
        self.text += delta
        self.logprobs += logprobs
        events.append(
            {
                **where(self.output, self.text_item),
                "type": "response.output_text.delta",
                "content_index": 0,
                "delta": delta,
                "logprobs": logprobs,
            }
        )
        return events

    def _close_text(self) -> list[Event]:
        item = self.text_item
        if item is None:
            return []
        self.text_item = None
        logprobs, self.logprobs = self.logprobs, []
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": logprobs}
        item.update(content=[part], status="completed")
        at = where(self.output, item)
        return [
            {
                **at,
                "type": "response.output_text.done",
                "content_index": 0,
                "text": self.text,
                "logprobs": logprobs,
            },
            {**at, "type": "response.content_part.done", "content_index": 0, "part": part},
            {
                "type": "response.output_item.done",
                "output_index": at["output_index"],
                "item": dict(item),
            },
        ]

    def _call_delta(self, delta: dict[str, Any]) -> list[Event]:
        index = int(delta.get("index") or 0)
        function = delta.get("function") or {}
        events: list[Event] = []
        call = self.open_calls.get(index)
        if call is None:
            events += self._close_text()  # the text before a call is complete
            name = function.get("name") or ""
            call_id = delta.get("id") or new_id("call_")
            # Names arrive whole in the first delta (OpenAI, vLLM, llama.cpp), so the item
            # can take the server tool's shape from the start.
            item = calls.new_call_item(self.server_tools.get(name), call_id=call_id, name=name)
            call = Call(item=item, call_id=call_id, name=name)
            self.open_calls[index] = call
            events.append(self._add(item))
        elif function.get("name") and function["name"] != call.name:
            # llama.cpp repeats the name in every delta: only a different piece extends it.
            call.name += function["name"]
        if function.get("arguments"):
            call.arguments += function["arguments"]
            events += calls.arguments_delta(self.output, call, function["arguments"])
        return events


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chunk's token log probabilities (asked for with ``include``), in the Responses
    shape: chat completions' ``logprobs.content``, each with its ``bytes`` and
    ``top_logprobs``."""
    given = choice.get("logprobs")
    content = given.get("content") if isinstance(given, dict) else None
    if not isinstance(content, list):
        return []
    return [_logprob(entry, top=True) for entry in content if isinstance(entry, dict)]


def _logprob(entry: dict[str, Any], *, top: bool) -> dict[str, Any]:
    token = str(entry.get("token", ""))
    raw = entry.get("bytes")
    logprob: dict[str, Any] = {
        "token": token,
        "logprob": float(entry.get("logprob") or 0.0),
        "bytes": raw if isinstance(raw, list) else list(token.encode()),
    }
    if top:
        tops = entry.get("top_logprobs")
        logprob["top_logprobs"] = [
            _logprob(t, top=False) for t in tops or () if isinstance(t, dict)
        ]
    return logprob
